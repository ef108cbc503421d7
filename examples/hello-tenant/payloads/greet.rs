//! The example's payload: greets whoever its arguments name, and says what
//! it was started as.

fn main() {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let who: Vec<String> = args.collect();
    let who = if who.is_empty() { "world".to_owned() } else { who.join(" ") };
    println!("hello, {who} (from {argv0}, pid {})", std::process::id());
}
