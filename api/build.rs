//! Embeds the dashboard (`ui/`) in the binary: one `(name, bytes)` entry per file, so Herald serves its web
//! pages with nothing beside the executable and nothing fetched at run time.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    println!("cargo:rerun-if-changed={}", ui.display());
    let mut names: Vec<String> = std::fs::read_dir(&ui)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| !name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut table = String::from("&[\n");
    for name in &names {
        println!("cargo:rerun-if-changed={}", ui.join(name).display());
        let _ = writeln!(
            table,
            "    ({name:?}, include_bytes!({:?}) as &[u8]),",
            ui.join(name).display().to_string()
        );
    }
    table.push(']');
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui_assets.rs");
    std::fs::write(out, table).expect("write the dashboard's asset table");
}
