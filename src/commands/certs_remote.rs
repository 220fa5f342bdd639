//! `ocfk8s certs check --remote`: the expiry of the certificates each host
//! really has, like `kubeadm certs check-expiration`, per host.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{CertsCheckArgs, GlobalArgs, TableOrJson};
use crate::ops::fleet::{self, Fleet};
use crate::printer::Printer;
use crate::remote::{self, HostCertificate};

#[derive(Debug, Serialize)]
struct Row {
    host: String,
    path: String,
    subject: String,
    /// `YYYY-MM-DD HH:MM UTC`; absent when the file holds no certificate.
    expires: Option<String>,
    residual_days: Option<i64>,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    serial: Option<String>,
}

pub(crate) fn run(
    global: &GlobalArgs,
    args: &CertsCheckArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    let found = fleet::runtime()?.block_on(async {
        let progress = printer.host_progress(cluster.nodes().map(|node| node.name.as_str()));
        let fleet =
            Fleet::connect_all(cluster, &super::settings(cluster, global), &progress).await?;
        let found = remote::for_each_host(
            &fleet.hosts,
            |host| host.name.as_str(),
            fleet.concurrency,
            "certificates",
            true,
            &progress,
            |host| async move {
                let certificates = remote::read_certificates(host).await?;
                let summary = format!("{} certificate(s)", certificates.len());
                Ok(((host.name.clone(), certificates), summary))
            },
        )
        .await;
        drop(progress);
        fleet.close().await;
        Ok::<_, anyhow::Error>(found?)
    })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rows: Vec<Row> = found
        .iter()
        .flat_map(|(host, certificates)| {
            certificates
                .iter()
                .map(move |certificate| row(host, certificate, now))
        })
        .collect();
    match args.output {
        TableOrJson::Json => printer.output(&serde_json::to_string_pretty(&rows)?),
        TableOrJson::Table => printer.output(&table(&rows, &found)),
    }
    Ok(())
}

fn row(host: &str, certificate: &HostCertificate, now: i64) -> Row {
    Row {
        host: host.to_string(),
        path: certificate.path.clone(),
        subject: certificate.subject.clone(),
        expires: certificate.not_after.map(format_time),
        residual_days: certificate
            .not_after
            .map(|not_after| (not_after - now).div_euclid(86_400)),
        serial: certificate.serial.clone(),
    }
}

fn format_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        ),
        Err(_) => unix.to_string(),
    }
}

fn table(rows: &[Row], found: &[(String, Vec<HostCertificate>)]) -> String {
    let headers = ["HOST", "CERTIFICATE", "SUBJECT", "EXPIRES", "RESIDUAL TIME"];
    let mut lines: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            [
                row.host.clone(),
                row.path.clone(),
                row.subject.clone(),
                row.expires.clone().unwrap_or_else(|| "unreadable".into()),
                match row.residual_days {
                    Some(days) if days < 0 => "EXPIRED".into(),
                    Some(days) => format!("{days}d"),
                    None => String::new(),
                },
            ]
        })
        .collect();
    for (host, certificates) in found {
        if certificates.is_empty() {
            lines.push([
                host.clone(),
                "(no certificates)".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    let mut widths = headers.map(str::len);
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut push = |cells: [&str; 5]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    push(headers);
    for line in &lines {
        push([&line[0], &line[1], &line[2], &line[3], &line[4]]);
    }
    out
}
