//! Expiry of everything in the store, for `certs check`: every certificate
//! file and every kubeconfig's client certificate, with the CA that signed
//! it (found by checking signatures, not by trusting names).

use serde::Serialize;
use time::OffsetDateTime;

use super::ca_rotation::{self, RotationReport};
use super::certlist::{Authority, RotationSlot};
use super::kubeconfig;
use super::material::Certificate;
use super::Store;
use crate::error::bad_input;

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// `apiserver-etcd-client`, `nodes/m1/apiserver`, `admin.conf`, or the
    /// CA's label for authorities.
    pub name: String,
    /// Store-relative file.
    pub file: String,
    pub subject: String,
    /// RFC 3339, UTC.
    pub expires: String,
    /// The same, as a UNIX timestamp.
    #[serde(skip)]
    pub not_after: i64,
    pub residual_seconds: i64,
    /// The CA that signed it (`ca`, `etcd-ca`, ...), `unknown` when no CA
    /// of the store did; absent for the CAs themselves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub certificates: Vec<Entry>,
    pub authorities: Vec<Entry>,
    /// Where the store is in a CA rotation.
    pub ca_rotation: RotationReport,
}

/// Every certificate and kubeconfig of a checked store (see
/// [`super::check`]): nothing is read from disk here.
pub fn inspect(store: &Store) -> anyhow::Result<Report> {
    if !store.is_checked() {
        anyhow::bail!("inspecting a PKI store that was not checked");
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let files = store.files();

    let mut authorities = Vec::new();
    let mut signers = Vec::new();
    for authority in Authority::ALL {
        if let Some(bytes) = store.read_optional(authority.cert_path())? {
            let certificate = Certificate::parse(&store.path(authority.cert_path()), &bytes)?;
            authorities.push(entry(
                authority.label().to_string(),
                authority.cert_path(),
                &certificate,
                None,
                now,
            )?);
            signers.push((authority.label().to_string(), certificate));
        }
    }
    // The second CA of a rotation in progress: `ca (new)` beside the old
    // signer after step 1, `ca (old)` beside the new one after step 2.
    let mut second_files = Vec::new();
    for slot in RotationSlot::ALL {
        for authority in Authority::ALL {
            let relative = authority.rotation_cert_path(slot);
            let Some(bytes) = store.read_optional(&relative)? else {
                continue;
            };
            let certificate = Certificate::parse(&store.path(&relative), &bytes)?;
            let label = format!(
                "{} ({})",
                authority.label(),
                match slot {
                    RotationSlot::Next => "new",
                    RotationSlot::Prev => "old",
                }
            );
            authorities.push(entry(label.clone(), &relative, &certificate, None, now)?);
            signers.push((label, certificate));
            second_files.push(relative);
        }
    }

    let mut certificates = Vec::new();
    for relative in files {
        let path = store.path(&relative);
        let (name, certificate) = if let Some(base) = relative.strip_suffix(".crt") {
            if Authority::ALL
                .iter()
                .any(|authority| authority.cert_path() == relative)
                || second_files.contains(&relative)
            {
                continue;
            }
            let bytes = store.read(&relative)?;
            (base.to_string(), Certificate::parse(&path, &bytes)?)
        } else if relative.ends_with(".conf") {
            let bytes = store.read(&relative)?;
            (
                relative.clone(),
                kubeconfig::parse(&path, &bytes)?.certificate,
            )
        } else {
            continue;
        };
        let authority = signers
            .iter()
            .find(|(_, signer)| certificate.is_signed_by(signer))
            .map(|(authority, _)| authority.clone())
            .unwrap_or_else(|| "unknown".to_string());
        certificates.push(entry(name, &relative, &certificate, Some(authority), now)?);
    }
    // By name, as kubeadm lists them: `apiserver` before
    // `apiserver-kubelet-client`, which file order (`-` < `.`) would invert.
    certificates.sort_by(|left, right| left.name.cmp(&right.name));
    Ok(Report {
        certificates,
        authorities,
        ca_rotation: ca_rotation::rotation_of_checked(store).report(),
    })
}

fn entry(
    name: String,
    file: &str,
    certificate: &Certificate,
    authority: Option<String>,
    now: i64,
) -> anyhow::Result<Entry> {
    let parsed = certificate
        .x509()
        .map_err(|error| bad_input(format!("{file}: {error:#}")))?;
    let not_after = parsed.validity().not_after.timestamp();
    Ok(Entry {
        name,
        file: file.to_string(),
        subject: parsed.subject().to_string(),
        expires: rfc3339(not_after),
        not_after,
        residual_seconds: not_after - now,
        authority,
    })
}

fn date_time(timestamp: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn rfc3339(timestamp: i64) -> String {
    let at = date_time(timestamp);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `Nov 25, 2027 12:15 UTC`, as kubeadm prints expiry.
pub fn human_date(timestamp: i64) -> String {
    let at = date_time(timestamp);
    let month = at.month().to_string();
    format!(
        "{} {:02}, {:04} {:02}:{:02} UTC",
        &month[..3],
        at.day(),
        at.year(),
        at.hour(),
        at.minute()
    )
}

/// kubeadm's short residual time: `45s`, `12m`, `5h`, `364d`, `9y`, or
/// `<invalid>` once expired.
pub fn short_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    if seconds < 60 {
        format!("{seconds}s")
    } else if minutes < 60 {
        format!("{minutes}m")
    } else if hours < 24 {
        format!("{hours}h")
    } else if hours < 24 * 365 {
        format!("{}d", hours / 24)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_read_like_kubeadm() {
        assert_eq!(short_duration(-3600), "<invalid>");
        assert_eq!(short_duration(30), "30s");
        assert_eq!(short_duration(600), "10m");
        assert_eq!(short_duration(5 * 3600), "5h");
        assert_eq!(short_duration(364 * 86400 + 3600), "364d");
        assert_eq!(short_duration(3650 * 86400), "10y");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(human_date(86400 * 31), "Feb 01, 1970 00:00 UTC");
    }
}
