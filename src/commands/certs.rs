//! `ocfk8s certs check`: expiry of the local store, like
//! `kubeadm certs check-expiration`.

use std::fmt::Write;

use crate::cli::{CertsCheckArgs, CertsCommand, GlobalArgs, TableOrJson};
use crate::error::bad_input;
use crate::pki;
use crate::pki::inspect::{self, Report};
use crate::printer::Printer;

pub(crate) fn run(
    command: &CertsCommand,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    match command {
        CertsCommand::Check(args) => check(args, global, printer),
    }
}

fn check(args: &CertsCheckArgs, global: &GlobalArgs, printer: &Printer) -> anyhow::Result<()> {
    if args.remote {
        anyhow::bail!("`ocfk8s certs check --remote` needs the SSH engine, which is not built yet");
    }
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let checked = pki::check(&resolved.cluster, printer)?;
    let report = inspect::inspect(&checked.store)?;
    match args.output {
        TableOrJson::Json => {
            let text = serde_json::to_string_pretty(&report)?;
            printer.output(&text);
        }
        TableOrJson::Table => printer.output(&table(&report)),
    }
    if !checked.expired.is_empty() {
        return Err(bad_input(format!(
            "{} certificate{} cannot be used now:\n  {}",
            checked.expired.len(),
            if checked.expired.len() == 1 { "" } else { "s" },
            checked.expired.join("\n  ")
        )));
    }
    Ok(())
}

fn table(report: &Report) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 4]> = report
        .certificates
        .iter()
        .map(|entry| {
            [
                entry.name.clone(),
                inspect::human_date(entry.not_after),
                inspect::short_duration(entry.residual_seconds),
                entry.authority.clone().unwrap_or_default(),
            ]
        })
        .collect();
    write_table(
        &mut out,
        &[
            "CERTIFICATE",
            "EXPIRES",
            "RESIDUAL TIME",
            "CERTIFICATE AUTHORITY",
        ],
        &rows,
    );
    out.push('\n');
    let rows: Vec<[String; 3]> = report
        .authorities
        .iter()
        .map(|entry| {
            [
                entry.name.clone(),
                inspect::human_date(entry.not_after),
                inspect::short_duration(entry.residual_seconds),
            ]
        })
        .collect();
    write_table(
        &mut out,
        &["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME"],
        &rows,
    );
    if report.ca_rotation.step > 0 {
        out.push('\n');
        out.push_str(&report.ca_rotation.summary);
        out.push('\n');
    }
    out
}

fn write_table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == N {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:width$}   ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
