//! Renders the seed scenario: `cargo run --example seed [DIR]` writes the
//! GitOps tree to DIR, or prints the stream without one.
fn main() -> Result<(), palisade_kube::Error> {
    let opts = palisade_kube::RenderOptions::default();
    let r = palisade_kube::render(&palisade_kube::fixtures::seed(), &opts)?;
    match std::env::args().nth(1) {
        Some(dir) => print!("{}", palisade_kube::write_tree(dir.as_ref(), &r, &opts)?),
        None => {
            let objs: Vec<_> = r.objects().cloned().collect();
            print!("{}", palisade_kube::to_multi_doc(&objs));
        }
    }
    Ok(())
}
