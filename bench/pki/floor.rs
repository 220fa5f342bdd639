//! The signing floor of the PKI benchmark: only what no implementation can
//! skip (one key generation and one signature per certificate), with no
//! files, no checks and no kubeconfigs. `pki generate` is measured against
//! this, single-threaded and on every core.
//!
//! Usage: `pki_floor COUNT ecdsa-p256|rsa-2048 THREADS` (0 threads: all
//! cores). Prints the elapsed seconds.
//!
//! `pki_floor write DIR FILES` measures the other floor, durable file
//! creation: FILES small files written the way the store is (temporary
//! file, one `syncfs`, rename, one more `syncfs`), with no cryptography.

use std::time::Instant;

use rayon::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    RsaKeySize, SerialNumber,
};

fn generate(algorithm: &str) -> anyhow::Result<KeyPair> {
    Ok(match algorithm {
        "rsa-2048" => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)?,
        _ => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    })
}

/// Write `files` 600-byte files below `dir` as the store is written.
fn write_floor(dir: &std::path::Path, files: usize) -> anyhow::Result<f64> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let start = Instant::now();
    std::fs::create_dir_all(dir)?;
    let contents = vec![b'x'; 600];
    let temporaries: Vec<(std::path::PathBuf, std::path::PathBuf)> = (0..files)
        .into_par_iter()
        .map(|index| -> anyhow::Result<_> {
            let target = dir.join(format!("file-{index}"));
            let temporary = dir.join(format!(".file-{index}.tmp"));
            let mut handle = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            handle.write_all(&contents)?;
            Ok((temporary, target))
        })
        .collect::<anyhow::Result<_>>()?;
    let sync = || -> anyhow::Result<()> {
        let handle = std::fs::File::open(dir)?;
        // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
        anyhow::ensure!(
            unsafe { libc::syncfs(handle.as_raw_fd()) } == 0,
            "syncfs failed"
        );
        Ok(())
    };
    sync()?;
    for (temporary, target) in &temporaries {
        std::fs::rename(temporary, target)?;
    }
    sync()?;
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().collect();
    if arguments.get(1).map(String::as_str) == Some("write") {
        let dir = arguments
            .get(2)
            .ok_or_else(|| anyhow::anyhow!("usage: pki_floor write DIR FILES"))?;
        let files: usize = arguments.get(3).map_or(Ok(1284), |files| files.parse())?;
        println!("{:.3}", write_floor(std::path::Path::new(dir), files)?);
        return Ok(());
    }
    let count: usize = arguments.get(1).map_or(Ok(437), |count| count.parse())?;
    let algorithm = arguments
        .get(2)
        .map_or("ecdsa-p256", String::as_str)
        .to_string();
    let threads: usize = arguments.get(3).map_or(Ok(0), |threads| threads.parse())?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;

    let mut ca_params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "floor-ca");
    ca_params.distinguished_name = name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca_params, generate(&algorithm)?);

    let start = Instant::now();
    let total: usize = pool.install(|| {
        (0..count)
            .into_par_iter()
            .map(|index| -> anyhow::Result<usize> {
                let key = generate(&algorithm)?;
                let mut params = CertificateParams::default();
                let mut name = DistinguishedName::new();
                name.push(DnType::CommonName, format!("leaf-{index}"));
                params.distinguished_name = name;
                params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
                Ok(params.signed_by(&key, &issuer)?.der().len())
            })
            .sum::<anyhow::Result<usize>>()
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    anyhow::ensure!(total > 0, "no certificate was signed");
    println!("{elapsed:.3}");
    Ok(())
}
