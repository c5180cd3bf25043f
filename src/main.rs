fn main() {
    // Before anything else: a Ctrl-C while a training run is still starting must stop it
    // in order, not kill it. Commands that do not train give the signals back at once.
    lamina::train::signals::install();
    std::process::exit(lamina::cli::main());
}
