//! `palisade render --out`: the Git repository Flux pulls the tree from is
//! the user's, given once and then recorded, never a placeholder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::Env;

#[test]
fn render_out_without_a_git_url_refuses_and_writes_nothing() {
    let env = Env::seeded();
    let tree = env.dir.path().join("gitops");
    let out = tree.to_str().unwrap();
    env.run(&["render", "--out", out]).fails_with("--git-url");
    assert!(!tree.exists(), "a refused render wrote {}", tree.display());

    // The scp-like form is refused too: Flux's GitRepository.spec.url
    // pattern is ^(http|https|ssh)://.*$ (source-controller v1.4.0, v1.9.1).
    env.run(&[
        "render",
        "--out",
        out,
        "--git-url",
        "git@github.com:org/gitops.git",
    ])
    .fails_with("git@github.com:org/gitops.git");
    assert!(!tree.exists());

    // Without Flux, on request.
    env.run(&["render", "--out", out, "--no-flux"]).ok();
    assert!(
        tree.join("overlays/production/kustomization.yaml")
            .is_file()
    );
    assert!(!tree.join("clusters").exists());
}

#[test]
fn the_git_source_is_recorded_and_reused_by_later_renders() {
    let env = Env::seeded();
    let tree = env.dir.path().join("gitops");
    let out = tree.to_str().unwrap();
    let url = "ssh://git@git.example.com/platform/gitops.git";
    env.run(&[
        "render",
        "--out",
        out,
        "--git-url",
        url,
        "--git-path",
        "k8s",
    ])
    .ok();
    let repo = |env: &str| {
        std::fs::read_to_string(tree.join(format!("clusters/{env}/palisade/gitrepository.yaml")))
            .unwrap()
    };
    assert!(repo("production").contains(url), "{}", repo("production"));
    let ks =
        std::fs::read_to_string(tree.join("clusters/production/palisade/flux-kustomization.yaml"))
            .unwrap();
    assert!(ks.contains("path: \"./k8s/overlays/production\""), "{ks}");

    // A later render without the flags keeps the source: nothing changes.
    let again = env.run(&["render", "--out", out]).ok();
    assert!(
        again.starts_with("0 added, 0 changed, 0 removed"),
        "{again}"
    );

    // A new branch changes only the GitRepository of each cluster.
    let moved = env
        .run(&["render", "--out", out, "--git-branch", "release"])
        .ok();
    assert!(
        moved.starts_with("0 added, 2 changed, 0 removed"),
        "{moved}"
    );
    assert!(repo("development").contains("branch: release"));
    assert!(repo("development").contains(url));

    // --no-flux removes the Flux objects it wrote.
    let off = env.run(&["render", "--out", out, "--no-flux"]).ok();
    assert!(
        off.contains("- clusters/production/palisade/gitrepository.yaml"),
        "{off}"
    );
    assert!(!tree.join("clusters").exists());
}
