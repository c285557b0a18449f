//! The `replaystore` command line. Each subcommand lives in its own module under `src/cli/`.

// The engine's limit holds here too (clippy.toml); a long but flat list may say `#[allow]`.
#![warn(clippy::too_many_lines)]

mod cli;

fn main() {
    // Die quietly on a closed pipe (`replaystore ls | head`), like other command-line tools,
    // instead of panicking on the failed print.
    // SAFETY: called once, before any thread starts; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let code = match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    };
    std::process::exit(code);
}
