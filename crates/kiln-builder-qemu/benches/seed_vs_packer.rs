fn main() {
    eprintln!("see scripts/bench-seed.sh");
}
