//! Re-embeds the migrations whenever `sql/` changes (refinery's macro does not track it).
fn main() {
    println!("cargo:rerun-if-changed=sql");
}
