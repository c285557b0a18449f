//! The fuzz targets' functions (src/fuzzing.rs) on stable Rust, in CI: every seed of
//! fuzz/corpus, many random mutations of each (bit flips, overwritten bytes, cuts, splices),
//! and random byte strings. None may panic; a hang would time the test out.

use std::path::Path;

use replaystore_testkit::fuzzing;
use replaystore_testkit::generator::Rng;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(!out.is_empty(), "no seed corpus in {}", dir.display());
    out.sort();
    out
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if d.is_empty() {
            d.push(rng.below(256) as u8);
            continue;
        }
        let at = rng.below(d.len() as u64) as usize;
        match rng.below(5) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = rng.below(256) as u8,
            2 => d.truncate(at),
            3 => {
                let n = rng.below(16) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
                d.splice(at..at, bytes);
            }
            _ => {
                // Overwrite a little-endian length-like field with an extreme value.
                let v = [0u32, 1, 0xFFFF, 0x7FFF_FFFF, u32::MAX][rng.below(5) as usize];
                for (k, b) in v.to_le_bytes().iter().enumerate() {
                    if at + k < d.len() {
                        d[at + k] = *b;
                    }
                }
            }
        }
    }
    d
}

fn run(target: &str, f: fn(&[u8]), per_seed: usize, random: usize) -> usize {
    let mut rng = Rng::new(0xF022 ^ target.len() as u64);
    let mut execs = 0;
    for seed in seeds(target) {
        f(&seed);
        execs += 1;
        for _ in 0..per_seed {
            f(&mutate(&mut rng, &seed));
            execs += 1;
        }
    }
    for _ in 0..random {
        let n = rng.below(512) as usize;
        let data: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        f(&data);
        execs += 1;
    }
    println!("{target}: {execs} inputs");
    execs
}

#[test]
fn block_decoder_survives_arbitrary_input() {
    run("block", fuzzing::block, 3000, 2000);
}

#[test]
fn footer_and_trailer_parsers_survive_arbitrary_input() {
    run("footer", fuzzing::footer, 3000, 2000);
}

#[test]
fn opening_a_directory_of_arbitrary_segments_survives() {
    run("open_dir", fuzzing::open_dir, 150, 50);
}

#[test]
fn posthog_parser_survives_arbitrary_input() {
    run("posthog", fuzzing::posthog, 2000, 2000);
}
