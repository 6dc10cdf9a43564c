//! rewindctl: vdc-style client of rewindd. Everything is in
//! `rewind_daemon::client`; exit statuses are documented there and in
//! `rewindctl --help`.

use clap::Parser;

fn main() {
    let cli = rewind_daemon::client::Cli::parse();
    std::process::exit(rewind_daemon::client::run(cli));
}
