//! Every configuration file shipped in `conf/` parses, and the site file spells out
//! exactly the built-in defaults.

use std::path::{Path, PathBuf};
use strata_common::config::SiteConfig;

fn conf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            conf_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_file_in_conf_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut files = Vec::new();
    conf_files(&dir, &mut files);
    assert!(files.len() >= 2, "found only {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if let Err(e) = SiteConfig::from_toml_str(&text) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn site_file_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/strata-site.toml");
    let parsed = SiteConfig::from_toml_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(parsed, SiteConfig::default());
}
