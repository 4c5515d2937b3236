//! Embeds the web dashboard: lists every file under `<workspace>/dashboard/` and the module
//! interfaces `<workspace>/contracts/*.sol` into `$OUT_DIR/dashboard_files.rs`, a sorted table
//! of `(url path, include_bytes!(..))` that `src/dashboard/` serves. Only plain files with
//! simple names (letters, digits, `.`, `_`, `-`) and a known extension are listed; anything
//! else (dotfiles, editor leftovers) is skipped, so the table is exactly what may be served.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// Extensions the dashboard serves.
const SERVED: &[&str] = &[
    "html", "js", "css", "svg", "json", "md", "sol", "png", "ico",
];

fn simple(name: &str) -> bool {
    !name.starts_with('.')
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !simple(&name) {
            continue;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, &format!("{prefix}{name}/"), out);
        } else if kind.is_file() {
            let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            if SERVED.contains(&ext) {
                out.push((format!("{prefix}{name}"), path));
            }
        }
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let dashboard = root.join("dashboard");
    let contracts = root.join("contracts");
    println!("cargo:rerun-if-changed={}", dashboard.display());
    println!("cargo:rerun-if-changed={}", contracts.display());
    let mut files = Vec::new();
    walk(&dashboard, "", &mut files);
    let mut sol = Vec::new();
    walk(&contracts, "contracts/", &mut sol);
    files.extend(sol.into_iter().filter(|(p, _)| p.ends_with(".sol")));
    files.sort();
    let mut code = String::from(
        "/// Every embedded dashboard file: (path under /dashboard/, bytes), sorted by path.\n",
    );
    code.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for (url, path) in &files {
        let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
        code.push_str(&format!(
            "    ({url:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("dashboard_files.rs");
    fs::write(&out, code).expect("writing dashboard_files.rs");
}
