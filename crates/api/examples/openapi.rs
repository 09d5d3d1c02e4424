//! Prints the OpenAPI document (`cargo run -p api --example openapi`).

fn main() {
    match api::openapi().to_pretty_json() {
        Ok(doc) => println!("{doc}"),
        Err(e) => {
            eprintln!("the OpenAPI document does not serialize: {e}");
            std::process::exit(1);
        }
    }
}
