//! The PKI store is never lost or corrupted, and is checked whenever it is
//! read: concurrent `pki generate` runs make one consistent store; a run
//! killed at any moment is finished or rolled back by the next; every
//! command that reads the store (`render`, `kubeconfig`, `certs check`)
//! refuses tampered material with exit 2 naming the file. openssl judges
//! the result.

mod common;
mod pki_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ocfk8s, BASE};
use pki_support::*;

/// BASE with more workers: 3 masters and `workers` workers.
fn big_inventory(workers: u32) -> String {
    let mut text = BASE.to_string();
    for index in 3..=workers {
        text.push_str(&format!(
            "\n[[worker]]\nname = \"w{index}\"\naddress = \"198.51.100.{index}\"\n"
        ));
    }
    text
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    ocfk8s()
        .current_dir(dir)
        .arg("-i")
        .arg("inventory.toml")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ocfk8s")
}

fn finish(child: Child) -> common::Run {
    child.wait_with_output().expect("wait for ocfk8s").into()
}

/// Every file below `dir` that is a temporary, or inside one (a new
/// folder built under a temporary name), and every temporary folder.
fn temporaries(dir: &Path) -> Vec<String> {
    let temporary = |name: &str| name.ends_with(".tmp") || name == ".ocfk8s-batch";
    let mut found: Vec<String> = common::tree(dir)
        .into_iter()
        .filter(|file| file.split('/').any(temporary))
        .collect();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                if temporary(&entry.file_name().to_string_lossy()) {
                    found.push(entry.path().display().to_string());
                }
                folders.push(entry.path());
            }
        }
    }
    found
}

/// Every certificate of the store with the CA that must have signed it, and
/// its key when it has one.
fn leaves(store: &Path) -> Vec<(PathBuf, &'static str, Option<PathBuf>)> {
    let mut leaves = Vec::new();
    for file in common::tree(store) {
        let Some(base) = file.strip_suffix(".crt") else {
            continue;
        };
        // Archived material (departed hosts, old CAs) is not the store's.
        if file.starts_with("archive/") {
            continue;
        }
        let ca = if file.contains("/etcd/") || file.starts_with("apiserver-etcd") {
            "etcd/ca.crt"
        } else if file.contains("front-proxy-client") {
            "front-proxy-ca.crt"
        } else if file == "ingress.crt" {
            "ingress-ca.crt"
        } else if file.ends_with("ca.crt") {
            continue;
        } else {
            "ca.crt"
        };
        let key = store.join(format!("{base}.key"));
        leaves.push((store.join(&file), ca, key.exists().then_some(key)));
    }
    leaves
}

/// openssl's verdict on the whole store: each CA's key is its certificate's,
/// every leaf verifies against its CA (one `openssl verify` per CA), and
/// with `keys`, every leaf key is its certificate's.
fn openssl_checks_store(store: &Path, keys: bool, at_least: usize) {
    for ca in ["ca", "etcd/ca", "front-proxy-ca", "ingress-ca"] {
        assert_eq!(
            public_key_of_cert(&store.join(format!("{ca}.crt"))),
            public_key_of_key(&store.join(format!("{ca}.key"))),
            "{ca}.key does not match {ca}.crt"
        );
    }
    let leaves = leaves(store);
    assert!(leaves.len() >= at_least, "{} leaves", leaves.len());
    for ca in [
        "ca.crt",
        "etcd/ca.crt",
        "front-proxy-ca.crt",
        "ingress-ca.crt",
    ] {
        let files: Vec<String> = leaves
            .iter()
            .filter(|(_, signer, _)| *signer == ca)
            .map(|(file, _, _)| file.display().to_string())
            .collect();
        let output = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(store.join(ca))
            .args(&files)
            .output()
            .expect("openssl verify");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success()
                && stdout.lines().filter(|line| line.ends_with(": OK")).count() == files.len(),
            "openssl verify against {ca}:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every key against its certificate, in process (x509-parser reads
    // the certificate, rcgen the key)...
    for (cert, _, key) in &leaves {
        if let Some(key) = key {
            let pem = String::from_utf8(read(key)).expect("utf-8 key");
            let pair = rcgen::KeyPair::from_pem(&pem).expect("key parses");
            let cert_pem = read(cert);
            let (_, block) = x509_parser::pem::parse_x509_pem(&cert_pem).expect("PEM");
            let parsed = block.parse_x509().expect("certificate");
            assert_eq!(
                parsed.public_key().subject_public_key.data.as_ref(),
                rcgen::PublicKeyData::der_bytes(&pair),
                "{} does not match its certificate",
                key.display()
            );
        }
    }
    if keys {
        // ... and by openssl for the masters' pairs and every tenth
        // worker's: two openssl runs per pair are too slow for all 400.
        let sampled = leaves.iter().filter(|(cert, _, key)| {
            let text = cert.display().to_string();
            key.is_some()
                && (!text.contains("/nodes/w")
                    || text
                        .split("/nodes/w")
                        .nth(1)
                        .and_then(|rest| rest.split('/').next())
                        .and_then(|number| number.parse::<u32>().ok())
                        .is_some_and(|number| number % 10 == 1))
        });
        let mut script = String::from("set -e\n");
        let mut count = 0;
        for (cert, _, key) in sampled {
            let key = key.as_ref().expect("has a key");
            count += 1;
            script.push_str(&format!(
                "a=$(openssl x509 -noout -pubkey -in '{}'); b=$(openssl pkey -pubout -in '{}'); \
                 [ \"$a\" = \"$b\" ] || {{ echo 'mismatch {}'; exit 1; }}\n",
                cert.display(),
                key.display(),
                key.display()
            ));
        }
        assert!(count > 30, "{count} pairs sampled");
        let output = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh");
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn concurrent_generates_for_200_workers_make_one_consistent_store() {
    let cluster = Cluster::new(&big_inventory(200));
    for trial in 0..4 {
        if cluster.store().exists() {
            std::fs::remove_dir_all(cluster.store()).expect("fresh store");
        }
        let writers: Vec<Child> = (0..3)
            .map(|_| spawn(cluster.dir.path(), &["pki", "generate"]))
            .collect();
        // A reader among them sees no store, or a whole one, never a part.
        let reader = spawn(cluster.dir.path(), &["certs", "check", "-o", "json"]);
        let mut created = 0;
        for writer in writers {
            let run = finish(writer);
            assert_eq!(run.status, 0, "trial {trial}: {}", run.stderr);
            if run.stdout.contains("created") {
                created += 1;
            } else {
                assert!(run.stdout.contains("up to date"), "{}", run.stdout);
            }
        }
        assert_eq!(
            created, 1,
            "trial {trial}: one run creates, the others find it done"
        );
        let read = finish(reader);
        assert!(
            read.status == 0 || read.stderr.contains("no PKI store"),
            "trial {trial}: certs check saw a partial store:\n{}",
            read.stderr
        );
        let again = cluster.run(&["pki", "generate"]);
        assert_eq!(again.status, 0, "trial {trial}: {}", again.stderr);
        assert!(again.stdout.contains("up to date"), "{}", again.stdout);
        assert_eq!(temporaries(&cluster.store()), Vec::<String>::new());
        openssl_checks_store(&cluster.store(), trial == 3, 400);
    }
}

/// A small deterministic generator for the kill moments.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

const ROUNDS: usize = 20;

#[test]
fn generate_killed_at_any_moment_is_finished_or_rolled_back_by_the_next_run() {
    // 80 workers (500 files): enough for kills to land among thousands of
    // writes and renames, few enough for 20 rounds to stay quick.
    let cluster = Cluster::new(&big_inventory(80));
    let started = Instant::now();
    cluster.generate();
    let full_run = started.elapsed();
    let mut random = Lcg(0x0cf8_5eed);
    let mut killed_with_leftovers = 0;
    for round in 0..ROUNDS {
        std::fs::remove_dir_all(cluster.store()).expect("fresh store");
        let delay = Duration::from_micros(
            random.next() % (full_run.as_micros() as u64 * 12 / 10).max(1_000),
        );
        let mut child = spawn(cluster.dir.path(), &["pki", "generate"]);
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if !temporaries(&cluster.store()).is_empty() {
            killed_with_leftovers += 1;
        }
        // The next run finishes or rolls back, then checks the whole store
        // (the files of the interrupted batch included) before it writes.
        let run = cluster.run(&["pki", "generate"]);
        assert_eq!(
            run.status, 0,
            "round {round}, killed after {delay:?}:\n{}",
            run.stderr
        );
        let left = temporaries(&cluster.store());
        assert!(
            left.is_empty(),
            "round {round}: {} temporaries left, first {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
        if round % 5 == 4 {
            let check = cluster.run(&["certs", "check", "-o", "json"]);
            assert_eq!(check.status, 0, "round {round}: {}", check.stderr);
            openssl_checks_store(&cluster.store(), false, 150);
        }
    }
    openssl_checks_store(&cluster.store(), true, 150);
    eprintln!("{killed_with_leftovers} of {ROUNDS} kills left temporaries behind");
    assert!(killed_with_leftovers > 0, "no kill landed while writing");
}

/// A generated BASE store and a place to render into.
fn generated() -> Cluster {
    let cluster = Cluster::base();
    cluster.generate();
    cluster
}

/// `args` exits 2 naming `named`, prints no key, and `render` wrote nothing.
fn refused(cluster: &Cluster, args: &[&str], named: &str) -> common::Run {
    let run = cluster.run(args);
    assert_eq!(
        run.status, 2,
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains(&format!("pki/test/{named}")),
        "{args:?}: error does not name {named}:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("BEGIN") && !run.stdout.contains("BEGIN"));
    assert!(
        !cluster.dir.path().join("out").exists(),
        "render wrote files"
    );
    run
}

fn render_refuses(corrupt: impl FnOnce(&Cluster), named: &str) {
    let cluster = generated();
    corrupt(&cluster);
    refused(&cluster, &["render", "--out", "out"], named);
}

#[test]
fn render_refuses_a_ca_key_symlinked_out_of_the_store() {
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        secret.path(),
        "root:SECRET-SHADOW-LINE:19000:0:99999:7:::\n",
    )
    .expect("write");
    let target = secret.path().to_path_buf();
    let cluster = generated();
    std::fs::remove_file(cluster.file("ca.key")).expect("remove");
    std::os::unix::fs::symlink(&target, cluster.file("ca.key")).expect("symlink");
    let run = refused(&cluster, &["render", "--out", "out"], "ca.key");
    assert!(run.stderr.contains("symlink"), "{}", run.stderr);
    assert!(!run.stderr.contains("SECRET-SHADOW"), "{}", run.stderr);
    // A symlinked folder is refused too, even for files behind it.
    let cluster = generated();
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let nodes = cluster.file("nodes");
    std::fs::rename(&nodes, elsewhere.path().join("nodes")).expect("move");
    std::os::unix::fs::symlink(elsewhere.path().join("nodes"), &nodes).expect("symlink");
    refused(&cluster, &["render", "--out", "out"], "nodes");
    refused(&cluster, &["pki", "generate"], "nodes");
}

#[test]
fn render_refuses_garbage_swapped_and_foreign_material() {
    render_refuses(
        |cluster| std::fs::write(cluster.file("ca.crt"), "garbage\n").expect("write"),
        "ca.crt",
    );
    render_refuses(
        |cluster| {
            std::fs::copy(
                cluster.file("nodes/m2/kubelet.key"),
                cluster.file("nodes/m1/kubelet.key"),
            )
            .expect("copy");
        },
        "nodes/m1/kubelet.key",
    );
    render_refuses(
        |cluster| {
            let foreign = tempfile::tempdir().expect("temp dir");
            openssl_ca(foreign.path(), "other", "kubernetes", KeyForm::EcPkcs8);
            openssl_leaf(
                foreign.path(),
                "apiserver",
                "other",
                "/CN=kube-apiserver",
                KeyForm::EcPkcs8,
            );
            for extension in ["crt", "key"] {
                std::fs::copy(
                    foreign.path().join(format!("apiserver.{extension}")),
                    cluster.file(&format!("nodes/m2/apiserver.{extension}")),
                )
                .expect("copy");
            }
        },
        "nodes/m2/apiserver.crt",
    );
    // A kubeconfig whose credentials are not its pair's.
    render_refuses(
        |cluster| {
            std::fs::copy(
                cluster.file("nodes/w2/kube-proxy.conf"),
                cluster.file("nodes/w1/kube-proxy.conf"),
            )
            .expect("copy");
        },
        "nodes/w1/kube-proxy.conf",
    );
}

#[test]
fn kubeconfig_prints_nothing_but_a_checked_admin_conf() {
    // admin.conf pointing at the CA key.
    let cluster = generated();
    std::fs::remove_file(cluster.file("admin.conf")).expect("remove");
    std::os::unix::fs::symlink(cluster.file("ca.key"), cluster.file("admin.conf")).expect("link");
    let run = refused(&cluster, &["kubeconfig"], "admin.conf");
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    // admin.conf holding the CA key itself.
    let cluster = generated();
    std::fs::copy(cluster.file("ca.key"), cluster.file("admin.conf")).expect("copy");
    let run = refused(&cluster, &["kubeconfig"], "admin.conf");
    assert!(run.stdout.is_empty());

    // A second user smuggled in beside the real one.
    let cluster = generated();
    let text = String::from_utf8(read(&cluster.file("admin.conf"))).expect("utf-8");
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(read(&cluster.file("ca.key")));
    let extra = format!(
        "{text}- name: extra\n  user:\n    client-certificate-data: {key}\n    client-key-data: {key}\n"
    );
    std::fs::write(cluster.file("admin.conf"), extra).expect("write");
    let run = refused(&cluster, &["kubeconfig"], "admin.conf");
    assert!(run.stdout.is_empty());
    assert!(!run.stderr.contains(&key[..40]), "{}", run.stderr);

    // A server that is not an https URL.
    let cluster = generated();
    let text = String::from_utf8(read(&cluster.file("admin.conf"))).expect("utf-8");
    std::fs::write(
        cluster.file("admin.conf"),
        text.replace("https://kube.example.org:6443", "http://evil.example:80/x"),
    )
    .expect("write");
    refused(&cluster, &["kubeconfig"], "admin.conf");
}

#[test]
fn a_ca_file_with_extra_certificates_is_refused_everywhere() {
    let cluster = generated();
    let mut bundle = read(&cluster.file("ca.crt"));
    bundle.extend(read(&cluster.file("etcd/ca.crt")));
    std::fs::write(cluster.file("ca.crt"), bundle).expect("write");
    for args in [
        &["pki", "generate"][..],
        &["render", "--out", "out"],
        &["certs", "check"],
        &["kubeconfig"],
    ] {
        let run = refused(&cluster, args, "ca.crt");
        assert!(run.stderr.contains("2 PEM blocks"), "{}", run.stderr);
    }
}

#[test]
fn a_private_key_others_may_read_is_refused_naming_chmod() {
    let cluster = generated();
    std::fs::set_permissions(
        cluster.file("ca.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let before = snapshot(&cluster.store());
    for args in [&["pki", "generate"][..], &["render", "--out", "out"]] {
        let run = refused(&cluster, args, "ca.key");
        assert!(
            run.stderr.contains("run `chmod 600 pki/test/ca.key`"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(before, snapshot(&cluster.store()), "nothing was changed");
    std::fs::set_permissions(
        cluster.file("ca.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    assert!(cluster.generate().stdout.contains("up to date"));
}

/// Replace `nodes/m1/apiserver.crt`/`.key` with a pair the store's CA
/// signed for `not_before..not_after`.
fn reissue_apiserver(cluster: &Cluster, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) {
    let ca_key =
        rcgen::KeyPair::from_pem(&String::from_utf8(read(&cluster.file("ca.key"))).expect("utf-8"))
            .expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &String::from_utf8(read(&cluster.file("ca.crt"))).expect("utf-8"),
        ca_key,
    )
    .expect("issuer");
    let mut params = rcgen::CertificateParams::new(vec!["kubernetes".to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = rcgen::KeyPair::generate().expect("key");
    let certificate = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(cluster.file("nodes/m1/apiserver.crt"), certificate.pem()).expect("write");
    std::fs::write(cluster.file("nodes/m1/apiserver.key"), key.serialize_pem()).expect("write");
}

#[test]
fn an_expired_or_future_leaf_is_flagged_with_how_to_renew_it() {
    let cluster = generated();
    reissue_apiserver(&cluster, (2020, 1, 1), (2021, 1, 1));
    assert!(
        !openssl_verifies(
            &cluster.file("ca.crt"),
            &cluster.file("nodes/m1/apiserver.crt")
        ),
        "openssl calls it expired too"
    );
    let before = snapshot(&cluster.store());
    let run = refused(&cluster, &["pki", "generate"], "nodes/m1/apiserver.crt");
    assert!(
        run.stderr.contains("expired on 2021-01-01"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ocfk8s pki generate") && run.stderr.contains("rm "),
        "{}",
        run.stderr
    );
    assert_eq!(before, snapshot(&cluster.store()));
    refused(
        &cluster,
        &["render", "--out", "out"],
        "nodes/m1/apiserver.crt",
    );

    // certs check shows the table, marks it, and fails.
    let check = cluster.run(&["certs", "check"]);
    assert_eq!(check.status, 2, "{}", check.stderr);
    let row = check
        .stdout
        .lines()
        .find(|line| line.starts_with("nodes/m1/apiserver "))
        .expect("apiserver row");
    assert!(row.contains("<invalid>"), "{row}");
    assert!(
        check.stderr.contains("expired on 2021-01-01"),
        "{}",
        check.stderr
    );

    // Following the advice renews it.
    std::fs::remove_file(cluster.file("nodes/m1/apiserver.crt")).expect("rm");
    std::fs::remove_file(cluster.file("nodes/m1/apiserver.key")).expect("rm");
    assert!(cluster.generate().stdout.contains("created 2 files"));
    assert_eq!(cluster.run(&["certs", "check"]).status, 0);

    // Not yet valid is flagged the same way.
    reissue_apiserver(&cluster, (2090, 1, 1), (2091, 1, 1));
    let run = refused(&cluster, &["pki", "generate"], "nodes/m1/apiserver.crt");
    assert!(
        run.stderr.contains("not valid before 2090-01-01"),
        "{}",
        run.stderr
    );
}

#[test]
fn certs_check_without_ca_crt_is_bad_input_naming_it() {
    let cluster = generated();
    std::fs::remove_file(cluster.file("ca.crt")).expect("remove");
    let run = refused(&cluster, &["certs", "check"], "ca.crt");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    // An incomplete store names what is missing.
    let cluster = generated();
    std::fs::remove_file(cluster.file("nodes/w2/kubelet.conf")).expect("remove");
    refused(&cluster, &["certs", "check"], "nodes/w2/kubelet.conf");
    refused(
        &cluster,
        &["render", "--out", "out"],
        "nodes/w2/kubelet.conf",
    );
}

#[test]
fn a_mismatched_ingress_certificate_and_key_fail_validate_and_render() {
    let cluster = Cluster::base();
    let certs = cluster.dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    openssl_ca(&certs, "ca", "wildcard-ca", KeyForm::EcPkcs8);
    openssl_leaf(
        &certs,
        "wildcard",
        "ca",
        "/CN=*.example.org",
        KeyForm::EcPkcs8,
    );
    openssl_leaf(
        &certs,
        "other",
        "ca",
        "/CN=other.example.org",
        KeyForm::EcPkcs8,
    );
    std::fs::copy(certs.join("other.key"), certs.join("wildcard.key")).expect("copy");
    cluster.set_inventory(&BASE.replace(
        "server_names = [\"*.example.org\"]",
        "server_names = [\"*.example.org\"]\ntls_cert = \"certs/wildcard.crt\"\ntls_key = \"certs/wildcard.key\"",
    ));
    cluster.generate();
    for args in [&["validate"][..], &["render", "--out", "out"]] {
        let run = cluster.run(args);
        assert_eq!(run.status, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        for named in [
            "certs/wildcard.crt",
            "certs/wildcard.key",
            "ingress.tls_cert",
            "ingress.tls_key",
        ] {
            assert!(
                run.stderr.contains(named),
                "{args:?} does not name {named}:\n{}",
                run.stderr
            );
        }
        assert!(!run.stderr.contains("BEGIN"));
        assert!(!cluster.dir.path().join("out").exists());
    }
    // The right key, and a certificate followed by its chain, pass.
    openssl_leaf(
        &certs,
        "wildcard2",
        "ca",
        "/CN=*.example.org",
        KeyForm::EcPkcs8,
    );
    let mut chain = read(&certs.join("wildcard2.crt"));
    chain.extend(read(&certs.join("ca.crt")));
    std::fs::write(certs.join("wildcard.crt"), chain).expect("write");
    std::fs::copy(certs.join("wildcard2.key"), certs.join("wildcard.key")).expect("copy");
    assert_eq!(cluster.run(&["validate"]).status, 0);
    let run = cluster.run(&["render", "--out", "out"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
}

#[test]
fn a_regular_file_as_pki_dir_is_bad_input_and_nothing_is_written() {
    let cluster = Cluster::new(&BASE.replace(
        "ca_validity_days = 3650",
        "ca_validity_days = 3650\npki_dir = \"store-file\"",
    ));
    let file = cluster.dir.path().join("store-file");
    std::fs::write(&file, "not a folder\n").expect("write");
    for args in [
        &["pki", "generate"][..],
        &["certs", "check"],
        &["render", "--out", "out"],
        &["kubeconfig"],
    ] {
        let run = cluster.run(args);
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("store-file: pki_dir is a file"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "not a folder\n"
    );
    assert_eq!(
        common::tree(cluster.dir.path()),
        ["inventory.toml", "store-file"],
        "nothing was written"
    );
}

#[test]
fn a_batch_committed_before_a_kill_is_finished_even_by_a_reader() {
    // What a kill between the journal's commit and the last rename leaves:
    // ca.crt still under its temporary name, and a stray temporary key.
    let cluster = generated();
    let temporary = ".ca.crt.00000000000000aa.tmp";
    std::fs::rename(cluster.file("ca.crt"), cluster.file(temporary)).expect("rename");
    std::fs::write(
        cluster.file(".ocfk8s-batch"),
        format!("ocfk8s batch 1\n{temporary}\tca.crt\nend\n"),
    )
    .expect("journal");
    let stray = cluster.file("nodes/w1/.kubelet.key.00000000000000bb.tmp");
    std::fs::write(&stray, "half a key").expect("stray");
    let run = cluster.run(&["certs", "check"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("finished writing 1 file(s) an interrupted run had committed"),
        "{}",
        run.stderr
    );
    assert!(cluster.file("ca.crt").exists());
    assert_eq!(temporaries(&cluster.store()), Vec::<String>::new());
    assert!(openssl_verifies(
        &cluster.file("ca.crt"),
        &cluster.file("nodes/m1/apiserver.crt")
    ));
}

#[test]
fn an_archive_of_departed_hosts_is_invisible_to_generate_check_and_render() {
    // What `remove-worker w2` leaves: w2 gone from the inventory, its
    // material moved to archive/w2-<time>/.
    let cluster = generated();
    let without_w2 = BASE.replace(
        "\n[[worker]]\nname = \"w2\"\naddress = \"192.0.2.22\"\n",
        "\n",
    );
    assert_ne!(without_w2, BASE);
    cluster.set_inventory(&without_w2);
    let archive = cluster.file("archive");
    std::fs::create_dir(&archive).expect("mkdir");
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let archived = archive.join("w2-20250102T030405Z");
    std::fs::rename(cluster.file("nodes/w2"), &archived).expect("archive");
    let before = snapshot(&cluster.store());

    let generate = cluster.run(&["pki", "generate"]);
    assert_eq!(generate.status, 0, "{}", generate.stderr);
    assert_eq!(
        snapshot(&cluster.store()),
        before,
        "pki generate changed the store"
    );
    for args in [
        &["certs", "check"][..],
        &["certs", "check", "-o", "json"][..],
    ] {
        let check = cluster.run(args);
        assert_eq!(check.status, 0, "{args:?}: {}", check.stderr);
        assert!(
            !check.stdout.contains("w2") && !check.stdout.contains("archive"),
            "{args:?} lists archived material:\n{}",
            check.stdout
        );
        assert!(
            check.stdout.contains("nodes/w1/kubelet"),
            "{}",
            check.stdout
        );
    }
    let render = cluster.run(&["render", "--out", "out"]);
    assert_eq!(render.status, 0, "{}", render.stderr);
    assert!(!cluster.dir.path().join("out/w2").exists());
    assert_eq!(snapshot(&cluster.store()), before);

    // Listed again, w2 gets new material; the archive is left as it was.
    cluster.set_inventory(BASE);
    cluster.generate();
    assert_ne!(
        read(&cluster.file("nodes/w2/kubelet.crt")),
        read(&archived.join("kubelet.crt"))
    );
    let archived_now: Vec<_> = snapshot(&cluster.store())
        .into_iter()
        .filter(|(path, _)| path.starts_with("archive/"))
        .collect();
    let archived_before: Vec<_> = before
        .into_iter()
        .filter(|(path, _)| path.starts_with("archive/"))
        .collect();
    assert!(archived_before.len() > 5, "{archived_before:?}");
    assert_eq!(archived_now, archived_before);
}

/// The next store step of a CA rotation, through the library (the command
/// that drives it on hosts, `rotate-certs --ca`, is the lead's).
fn rotate_ca(cluster: &Cluster, sa: bool) -> u8 {
    let inventory = ocfk8s::inventory::load(&cluster.dir.path().join("inventory.toml"))
        .expect("inventory")
        .cluster;
    let printer = ocfk8s::printer::Printer::new(0, true, true);
    ocfk8s::pki::ca_rotate_next_for_tests(&inventory, sa, &printer).expect("CA rotation step")
}

/// How many PEM certificates a file holds.
fn certificates_in(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

/// A kubeconfig's base64 field, decoded, written beside `dir` as `name`.
fn kubeconfig_field(conf: &Path, field: &str, out: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(conf).expect("kubeconfig");
    let value = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("{}: no {field}", conf.display()));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .expect("base64");
    std::fs::write(out, &bytes).expect("write");
    bytes
}

fn concatenated(out: &Path, files: &[PathBuf]) -> PathBuf {
    let mut bytes = Vec::new();
    for file in files {
        bytes.extend(std::fs::read(file).expect("read"));
    }
    std::fs::write(out, bytes).expect("write");
    out.to_path_buf()
}

/// What `openssl pkcs7 -print_certs` counts in a bundle: openssl's own
/// reading of every certificate in it.
fn openssl_counts(bundle: &Path) -> usize {
    let output = Command::new("sh")
        .arg("-c")
        .arg("openssl crl2pkcs7 -nocrl -certfile \"$1\" | openssl pkcs7 -print_certs -noout | grep -c '^subject'")
        .arg("sh")
        .arg(bundle)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Every certificate of the store with its key (no kubeconfigs), signed by
/// a rotated CA.
fn rotated_leaves(store: &Path) -> Vec<(PathBuf, &'static str)> {
    leaves(store)
        .into_iter()
        .filter(|(file, ca, _)| {
            *ca != "ingress-ca.crt"
                && !file.to_string_lossy().contains(".next.")
                && !file.to_string_lossy().contains(".prev.")
        })
        .map(|(file, ca, _)| (file, ca))
        .collect()
}

#[test]
fn a_ca_rotation_trusts_both_then_reissues_then_archives_as_openssl_sees_it() {
    let cluster = generated();
    let store = cluster.store();
    let scratch = tempfile::tempdir().expect("scratch");
    let old = std::fs::read(store.join("ca.crt")).expect("ca");
    let render = |out: &str| {
        let run = cluster.run(&["render", "--out", out]);
        assert_eq!(run.status, 0, "{}", run.stderr);
        cluster.dir.path().join(out)
    };
    let normal = snapshot(&render("out-before"));

    // Step 1: new CAs beside the old; leaves still from the old.
    assert_eq!(rotate_ca(&cluster, true), 1);
    let check = cluster.run(&["certs", "check"]);
    assert_eq!(check.status, 0, "{}", check.stderr);
    assert!(
        check.stdout.contains(
            "CA rotation: step 1 of 3 done (new CAs trusted, leaves still from the old CAs); \
             next: `ocfk8s rotate-certs --ca`"
        ),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("ca (new)"), "{}", check.stdout);
    let json = cluster.run(&["certs", "check", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(report["ca_rotation"]["step"], 1);
    assert_eq!(report["ca_rotation"]["state"], "trusting");
    assert_eq!(report["ca_rotation"]["service_account"], true);
    let leaves_now = rotated_leaves(&store);
    assert!(leaves_now.len() >= 30, "{}", leaves_now.len());
    for (leaf, ca) in &leaves_now {
        let next = store.join(ca.replace(".crt", ".next.crt"));
        let bundle = concatenated(
            &scratch.path().join("bundle.crt"),
            &[store.join(ca), next.clone()],
        );
        assert!(
            openssl_verifies(&store.join(ca), leaf),
            "{}",
            leaf.display()
        );
        assert!(openssl_verifies(&bundle, leaf), "{}", leaf.display());
        assert!(!openssl_verifies(&next, leaf), "{}", leaf.display());
    }

    // What hosts receive at step 1: a bundle in every trust file, the
    // signing CA's own certificate and key for the controller-manager.
    let out = render("out-1");
    for host in ["m1", "m2", "m3", "w1", "w2"] {
        let root = out.join(host);
        let mut trust = vec!["etc/kubernetes/pki/ca.crt"];
        let mut kubeconfigs = vec![
            "etc/kubernetes/kubelet.conf",
            "var/lib/kube-proxy/kubeconfig.conf",
        ];
        if host.starts_with('m') {
            trust.extend([
                "etc/kubernetes/pki/etcd/ca.crt",
                "etc/kubernetes/pki/front-proxy-ca.crt",
            ]);
            kubeconfigs.extend([
                "etc/kubernetes/admin.conf",
                "etc/kubernetes/controller-manager.conf",
                "etc/kubernetes/scheduler.conf",
            ]);
            let signing =
                std::fs::read(root.join("etc/kubernetes/pki/ca-signing.crt")).expect("signing");
            assert_eq!(signing, old, "{host}: the signing CA is still the old one");
            assert_eq!(
                std::fs::read(root.join("etc/kubernetes/pki/ca.key")).expect("key"),
                std::fs::read(store.join("ca.key")).expect("key")
            );
            let manifest = std::fs::read_to_string(
                root.join("etc/kubernetes/manifests/kube-controller-manager.yaml"),
            )
            .expect("manifest");
            assert!(
                manifest.contains("--cluster-signing-cert-file=/etc/kubernetes/pki/ca-signing.crt"),
                "{manifest}"
            );
            assert!(manifest.contains("--root-ca-file=/etc/kubernetes/pki/ca.crt"));
            let sa =
                std::fs::read_to_string(root.join("etc/kubernetes/pki/sa.pub")).expect("sa.pub");
            assert_eq!(sa.matches("BEGIN PUBLIC KEY").count(), 2, "{host}");
            // The rendered leaves verify against the rendered bundle.
            for leaf in ["apiserver.crt", "etcd/server.crt", "front-proxy-client.crt"] {
                let ca = if leaf.starts_with("etcd") {
                    "etcd/ca.crt"
                } else if leaf.starts_with("front") {
                    "front-proxy-ca.crt"
                } else {
                    "ca.crt"
                };
                assert!(
                    openssl_verifies(
                        &root.join("etc/kubernetes/pki").join(ca),
                        &root.join("etc/kubernetes/pki").join(leaf)
                    ),
                    "{host} {leaf}"
                );
            }
        } else {
            assert!(!root.join("etc/kubernetes/pki/ca-signing.crt").exists());
        }
        for file in trust {
            let path = root.join(file);
            assert_eq!(
                certificates_in(&std::fs::read(&path).expect("trust")),
                2,
                "{host} {file}"
            );
            assert_eq!(openssl_counts(&path), 2, "{host} {file}");
        }
        for file in kubeconfigs {
            let authorities = scratch.path().join("authorities.crt");
            let bytes =
                kubeconfig_field(&root.join(file), "certificate-authority-data", &authorities);
            assert_eq!(certificates_in(&bytes), 2, "{host} {file}");
            assert_eq!(openssl_counts(&authorities), 2, "{host} {file}");
        }
    }

    // Step 2: every leaf and kubeconfig from the new CAs.
    assert_eq!(rotate_ca(&cluster, true), 2);
    let check = cluster.run(&["certs", "check"]);
    assert_eq!(check.status, 0, "{}", check.stderr);
    assert!(
        check.stdout.contains("CA rotation: step 2 of 3 done"),
        "{}",
        check.stdout
    );
    let new = std::fs::read(store.join("ca.crt")).expect("ca");
    assert_ne!(new, old);
    assert_eq!(std::fs::read(store.join("ca.prev.crt")).expect("prev"), old);
    for (leaf, ca) in rotated_leaves(&store) {
        let prev = store.join(ca.replace(".crt", ".prev.crt"));
        let bundle = concatenated(
            &scratch.path().join("bundle.crt"),
            &[store.join(ca), prev.clone()],
        );
        assert!(
            openssl_verifies(&store.join(ca), &leaf),
            "{}",
            leaf.display()
        );
        assert!(openssl_verifies(&bundle, &leaf), "{}", leaf.display());
        assert!(!openssl_verifies(&prev, &leaf), "{}", leaf.display());
    }
    let client = scratch.path().join("client.crt");
    for conf in common::tree(&store)
        .into_iter()
        .filter(|file| file.ends_with(".conf"))
    {
        kubeconfig_field(&store.join(&conf), "client-certificate-data", &client);
        assert!(openssl_verifies(&store.join("ca.crt"), &client), "{conf}");
        assert!(
            !openssl_verifies(&store.join("ca.prev.crt"), &client),
            "{conf}"
        );
    }
    let out = render("out-2");
    assert_eq!(
        std::fs::read(out.join("m1/etc/kubernetes/pki/ca-signing.crt")).expect("signing"),
        new
    );

    // Step 3: a normal store whose CAs are the new ones; the old archived.
    assert_eq!(rotate_ca(&cluster, false), 0);
    let check = cluster.run(&["certs", "check"]);
    assert_eq!(check.status, 0, "{}", check.stderr);
    assert!(!check.stdout.contains("CA rotation"), "{}", check.stdout);
    assert!(!check.stdout.contains("archive"), "{}", check.stdout);
    assert_eq!(std::fs::read(store.join("ca.crt")).expect("ca"), new);
    openssl_checks_store(&store, true, 30);
    let archived: Vec<String> = common::tree(&store.join("archive"));
    let folder = archived[0].split('/').next().expect("folder").to_string();
    assert!(folder.starts_with("ca_"), "{archived:?}");
    for file in [
        "ca.crt",
        "ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "sa.key",
        "sa.pub",
    ] {
        assert!(
            archived.contains(&format!("{folder}/{file}")),
            "{file}: {archived:?}"
        );
    }
    assert_eq!(
        std::fs::read(store.join("archive").join(&folder).join("ca.crt")).expect("old"),
        old
    );
    let generate = cluster.run(&["pki", "generate"]);
    assert_eq!(generate.status, 0, "{}", generate.stderr);
    let before = snapshot(&store);
    cluster.generate();
    assert_eq!(
        snapshot(&store),
        before,
        "a second pki generate changed the store"
    );
    // Rendering is a normal store's again: the same files as before the
    // rotation, one CA per trust file, no signing copy.
    let after = snapshot(&render("out-after"));
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        normal.keys().collect::<Vec<_>>()
    );
    let root = cluster.dir.path().join("out-after/m1");
    for file in [
        "etc/kubernetes/pki/ca.crt",
        "etc/kubernetes/pki/etcd/ca.crt",
        "etc/kubernetes/pki/front-proxy-ca.crt",
    ] {
        assert_eq!(
            certificates_in(&std::fs::read(root.join(file)).expect("trust")),
            1,
            "{file}"
        );
    }
    let manifest =
        std::fs::read_to_string(root.join("etc/kubernetes/manifests/kube-controller-manager.yaml"))
            .expect("manifest");
    assert!(manifest.contains("--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt"));
}
