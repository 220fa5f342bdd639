//! The signing floor of the PKI benchmark: only what no implementation can
//! skip (one key generation and one signature per certificate), with no
//! files, no checks and no kubeconfigs. `pki generate` is measured against
//! this, single-threaded and on every core.
//!
//! Usage: `pki_floor COUNT ecdsa-p256|rsa-2048 THREADS` (0 threads: all
//! cores). Prints the elapsed seconds.

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

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().collect();
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
