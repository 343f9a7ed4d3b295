//! Write each fuzz target's seeds into `fuzz/corpus/<target>/`: `seed-corpus <fixtures dir> <corpus dir>`.
//! The corpus directory is libFuzzer's to grow; the seeds are named by their content, so writing them again
//! adds nothing twice.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(fixtures), Some(corpus)) = (args.next(), args.next()) else {
        eprintln!("usage: seed-corpus <fixtures dir> <corpus dir>");
        std::process::exit(2);
    };
    let (fixtures, corpus) = (PathBuf::from(fixtures), PathBuf::from(corpus));
    for target in herald_fuzz::TARGETS {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        let seeds = herald_fuzz::seeds(target, &fixtures);
        for seed in &seeds {
            let name = format!("seed-{:016x}", fnv1a(seed));
            std::fs::write(dir.join(name), seed)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}

/// A stable content hash for file names (std's hasher is randomly keyed).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
