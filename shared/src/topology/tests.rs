//! One test per validation rule, each breaking a valid topology in one place, and the parser's
//! error positions.

use std::path::{Path, PathBuf};

use super::parse::line_column;
use super::*;

const DEMO: &str = include_str!("../../../topology/demo.toml");

#[test]
fn tiers_parse_their_spelling_and_order_from_the_top() {
    for t in [Tier::Primary, Tier::Intermediate, Tier::Regional] {
        assert_eq!(t.as_str().parse::<Tier>(), Ok(t));
    }
    assert!("standalone".parse::<Tier>().is_err());
    assert!(Tier::Primary < Tier::Intermediate && Tier::Intermediate < Tier::Regional);
}

/// A valid three-tier topology with k = 2, which each test breaks in one place.
const BASE: &str = r#"
redundancy = 2

[[node]]
id = "p1"
tier = "primary"
http = "127.0.0.1:9001"

[[node]]
id = "m1"
tier = "intermediate"
http = "127.0.0.1:9011"
parents = ["p1"]

[[node]]
id = "m2"
tier = "intermediate"
http = "127.0.0.1:9012"
parents = ["p1"]

[[node]]
id = "ra"
tier = "regional"
region = "a"
http = "127.0.0.1:9021"
parents = ["m1", "m2"]
backup = "rb"

[[node]]
id = "rb"
tier = "regional"
region = "b"
http = "127.0.0.1:9022"
parents = ["m1", "m2"]
backup = "ra"
"#;

fn errors_of(text: &str) -> Vec<TopologyError> {
    let topology = Topology::parse(text).expect("test topology parses");
    match topology.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e,
    }
}

/// Validates `text`, asserts exactly one error matching `pred`, and that its message
/// mentions every string of `names`.
fn assert_single(text: &str, pred: impl Fn(&TopologyError) -> bool, names: &[&str]) {
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    assert!(pred(&errors[0]), "unexpected error {:?}", errors[0]);
    let msg = errors[0].to_string();
    for name in names {
        assert!(msg.contains(name), "{msg:?} does not mention {name:?}");
    }
}

proptest::proptest! {
    /// A topology file damaged anywhere (a line dropped, duplicated or replaced with any
    /// text) parses or fails with an error, and what parses validates or fails with
    /// errors: never a panic, whatever the file says.
    #[test]
    fn damaged_topology_files_never_panic(
        edits in proptest::collection::vec((0usize..200, 0u8..3, ".{0,40}"), 1..6),
    ) {
        let mut lines: Vec<String> = DEMO.lines().map(str::to_owned).collect();
        for (at, how, text) in edits {
            let i = at % lines.len().max(1);
            match how {
                0 if !lines.is_empty() => { lines.remove(i); }
                1 if !lines.is_empty() => { let l = lines[i].clone(); lines.insert(i, l); }
                _ => lines.insert(i.min(lines.len()), text),
            }
        }
        if let Ok(t) = Topology::parse(&lines.join("\n")) {
            let _ = t.validate();
        }
    }
}

#[test]
fn base_is_valid() {
    assert!(errors_of(BASE).is_empty());
}

#[test]
fn demo_parses_and_validates() {
    let t = Topology::parse(DEMO).unwrap();
    t.validate().unwrap();
    assert_eq!(t.redundancy, 2);
    let ids = |it: &mut dyn Iterator<Item = &NodeSpec>| -> Vec<String> {
        it.map(|n| n.id.clone()).collect()
    };
    assert_eq!(ids(&mut t.primaries()), ["primary-a", "primary-b"]);
    assert_eq!(ids(&mut t.intermediates()), ["mid-1", "mid-2"]);
    assert_eq!(ids(&mut t.regionals()), ["na", "eu", "asia"]);
    assert_eq!(ids(&mut t.children("mid-1")), ["na", "eu", "asia"]);
    assert_eq!(ids(&mut t.children("primary-b")), ["mid-1", "mid-2"]);
    assert_eq!(ids(&mut t.parents("eu")), ["mid-1", "mid-2"]);
    assert_eq!(t.backup_of("na").unwrap().id, "eu");
    assert_eq!(t.backup_of("eu").unwrap().id, "asia");
    assert_eq!(t.backup_of("asia").unwrap().id, "na");
    assert!(t.backup_of("mid-1").is_none());
    assert_eq!(t.regional_for_region("asia").unwrap().id, "asia");
    assert!(t.regional_for_region("moon").is_none());
    let holders: Vec<&str> = t
        .holders_of_region("eu")
        .iter()
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(holders, ["eu", "asia"]);
    assert!(t.holders_of_region("moon").is_empty());
    assert_eq!(t.regions_held_by("eu"), ["eu", "na"]);
    assert!(t.regions_held_by("mid-1").is_empty());
    let ports: Vec<u16> = t.nodes.iter().map(|n| n.http.port()).collect();
    assert_eq!(ports, [7101, 7102, 7111, 7112, 7121, 7122, 7123]);
    assert_eq!(
        t.node("na").unwrap().base_url(false),
        "http://127.0.0.1:7121"
    );
}

#[test]
fn amqp_url_precedence() {
    let text = BASE.replacen(
        "redundancy = 2",
        "redundancy = 2\namqp_url = \"amqp://top:5672/%2f\"",
        1,
    );
    let text = text.replacen(
        "id = \"m1\"",
        "id = \"m1\"\namqp_url = \"amqp://own:5672/%2f\"",
        1,
    );
    let t = Topology::parse(&text).unwrap();
    t.validate().unwrap();
    assert_eq!(t.amqp_url_for("m1"), "amqp://own:5672/%2f");
    assert_eq!(t.amqp_url_for("m2"), "amqp://top:5672/%2f");
    let bare = Topology::parse(BASE).unwrap();
    assert_eq!(bare.amqp_url_for("m2"), DEFAULT_AMQP_URL);
}

#[test]
fn toml_round_trip() {
    let t = Topology::parse(DEMO).unwrap();
    let again = Topology::parse(&t.to_toml().unwrap()).unwrap();
    assert_eq!(t, again);
}

#[test]
fn queue_names() {
    assert_eq!(inbox_queue("na"), "docfed.na.inbox");
    assert_eq!(dead_letter_queue("mid-1"), "docfed.mid-1.dead");
}

#[test]
fn default_redundancy_is_two() {
    let t = Topology::parse(&BASE.replacen("redundancy = 2", "", 1)).unwrap();
    assert_eq!(t.redundancy, 2);
}

#[test]
fn tier_display() {
    assert_eq!(Tier::Primary.to_string(), "primary");
    assert_eq!(Tier::Intermediate.to_string(), "intermediate");
    assert_eq!(Tier::Regional.to_string(), "regional");
}

#[test]
fn parse_error_has_line() {
    let text = "redundancy = 2\n\n[[node]]\nid = \"p1\"\ntier = \"primary\"\nhttp = \"127.0.0.1:9001\"\nbogus = 1\n";
    let e = Topology::parse(text).unwrap_err();
    let TopologyError::Parse { line, .. } = &e else {
        panic!("not a parse error: {e:?}");
    };
    assert_eq!(*line, Some(7), "{e}");
    assert!(e.to_string().contains("line 7"), "{e}");
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn parse_error_bad_tier_and_address() {
    let e = Topology::parse(&BASE.replacen("\"primary\"", "\"boss\"", 1)).unwrap_err();
    assert!(
        matches!(e, TopologyError::Parse { line: Some(6), .. }),
        "{e}"
    );
    let e = Topology::parse(&BASE.replacen("127.0.0.1:9001", "localhost", 1)).unwrap_err();
    assert!(
        matches!(e, TopologyError::Parse { line: Some(7), .. }),
        "{e}"
    );
    let e = Topology::parse("redundancy = [").unwrap_err();
    assert!(
        matches!(e, TopologyError::Parse { line: Some(1), .. }),
        "{e}"
    );
}

#[test]
fn load_names_the_path() {
    let missing = Path::new("/nonexistent/docfed/topology.toml");
    let e = Topology::load(missing).unwrap_err();
    assert!(matches!(e, TopologyError::Read { .. }));
    assert!(
        e.to_string().contains("/nonexistent/docfed/topology.toml"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("docfed-topology-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.toml");
    std::fs::write(&file, "redundancy = \"two\"\n").unwrap();
    let e = Topology::load(&file).unwrap_err();
    let msg = e.to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        msg.contains("broken.toml") && msg.contains("line 1"),
        "{msg}"
    );

    let e = Topology::load_validated(missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        Topology::load(missing).unwrap_err().to_string(),
        "a read error is reported as is"
    );
}

#[test]
fn duplicate_id() {
    let text = BASE.replacen("id = \"m2\"", "id = \"m1\"", 1);
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, TopologyError::DuplicateId { id } if id == "m1")),
        "{errors:#?}"
    );
    assert!(errors.iter().any(|e| e.to_string().contains("`m1`")));
}

#[test]
fn duplicate_http() {
    assert_single(
        &BASE.replacen("127.0.0.1:9012", "127.0.0.1:9011", 1),
        |e| matches!(e, TopologyError::DuplicateHttp { .. }),
        &["`m1`", "`m2`", "127.0.0.1:9011"],
    );
    // A wildcard address also takes the port on 127.0.0.1.
    assert_single(
        &BASE.replacen("127.0.0.1:9012", "0.0.0.0:9011", 1),
        |e| matches!(e, TopologyError::DuplicateHttp { .. }),
        &["`m1`", "`m2`"],
    );
    // Same port on distinct addresses is fine.
    assert!(errors_of(&BASE.replacen("127.0.0.1:9012", "127.0.0.2:9011", 1)).is_empty());
}

#[test]
fn zero_port() {
    assert_single(
        &BASE.replacen("127.0.0.1:9012", "127.0.0.1:0", 1),
        |e| matches!(e, TopologyError::ZeroPort { node } if node == "m2"),
        &["`m2`"],
    );
}

#[test]
fn unknown_parent() {
    assert_single(
        &BASE.replacen("parents = [\"p1\"]", "parents = [\"p9\"]", 1),
        |e| matches!(e, TopologyError::UnknownParent { node, parent } if node == "m1" && parent == "p9"),
        &["`m1`", "`p9`"],
    );
}

#[test]
fn duplicate_parent() {
    assert_single(
        &BASE.replacen("parents = [\"p1\"]", "parents = [\"p1\", \"p1\"]", 1),
        |e| matches!(e, TopologyError::DuplicateParent { .. }),
        &["`m1`", "`p1`"],
    );
}

#[test]
fn unknown_backup() {
    assert_single(
        &BASE.replacen("backup = \"rb\"", "backup = \"rz\"", 1),
        |e| matches!(e, TopologyError::UnknownBackup { node, backup } if node == "ra" && backup == "rz"),
        &["`ra`", "`rz`"],
    );
}

#[test]
fn backup_not_regional() {
    assert_single(
        &BASE.replacen("backup = \"rb\"", "backup = \"m1\"", 1),
        |e| {
            matches!(
                e,
                TopologyError::BackupNotRegional {
                    backup_tier: Tier::Intermediate,
                    ..
                }
            )
        },
        &["`ra`", "`m1`", "intermediate"],
    );
}

#[test]
fn backup_is_self() {
    assert_single(
        &BASE.replacen("backup = \"rb\"", "backup = \"ra\"", 1),
        |e| matches!(e, TopologyError::BackupIsSelf { node } if node == "ra"),
        &["`ra`"],
    );
}

#[test]
fn regional_without_region() {
    assert_single(
        &BASE.replacen("region = \"a\"\n", "", 1),
        |e| matches!(e, TopologyError::MissingRegion { node } if node == "ra"),
        &["`ra`"],
    );
}

#[test]
fn regional_without_backup() {
    assert_single(
        &BASE.replacen("backup = \"rb\"\n", "", 1),
        |e| matches!(e, TopologyError::MissingBackup { node } if node == "ra"),
        &["`ra`"],
    );
}

#[test]
fn backup_on_non_regional() {
    assert_single(
        &BASE.replacen(
            "parents = [\"p1\"]",
            "parents = [\"p1\"]\nbackup = \"ra\"",
            1,
        ),
        |e| matches!(e, TopologyError::BackupOnNonRegional { node, .. } if node == "m1"),
        &["`m1`"],
    );
}

#[test]
fn region_on_non_regional() {
    assert_single(
        &BASE.replacen(
            "tier = \"primary\"",
            "tier = \"primary\"\nregion = \"a\"",
            1,
        ),
        |e| matches!(e, TopologyError::RegionOnNonRegional { node, tier: Tier::Primary, .. } if node == "p1"),
        &["`p1`", "primary"],
    );
}

#[test]
fn duplicate_region() {
    assert_single(
        &BASE.replacen("region = \"b\"", "region = \"a\"", 1),
        |e| matches!(e, TopologyError::DuplicateRegion { region, first, second } if region == "a" && first == "ra" && second == "rb"),
        &["`ra`", "`rb`", "\"a\""],
    );
}

#[test]
fn primary_with_parents() {
    assert_single(
        &format!(
            "{BASE}\n[[node]]\nid = \"p2\"\ntier = \"primary\"\nhttp = \"127.0.0.1:9002\"\nparents = [\"p1\"]\n"
        ),
        |e| matches!(e, TopologyError::PrimaryWithParents { node } if node == "p2"),
        &["`p2`"],
    );
}

#[test]
fn non_primary_without_parents() {
    assert_single(
        &BASE.replacen("parents = [\"p1\"]\n", "", 1),
        |e| matches!(e, TopologyError::MissingParents { node, tier: Tier::Intermediate } if node == "m1"),
        &["`m1`", "intermediate"],
    );
}

#[test]
fn cycle_names_its_nodes() {
    // m1 -> m2 -> m1 (m1 also keeps p1, so nobody is without parents).
    let text = BASE
        .replacen("parents = [\"p1\"]", "parents = [\"p1\", \"m2\"]", 1)
        .replacen("parents = [\"p1\"]", "parents = [\"m1\"]", 1);
    assert_single(
        &text,
        |e| matches!(e, TopologyError::Cycle { nodes } if nodes == &["m1", "m2", "m1"]),
        &["`m1` -> `m2` -> `m1`"],
    );
    // A node that is its own parent.
    assert_single(
        &BASE.replacen("parents = [\"p1\"]", "parents = [\"p1\", \"m1\"]", 1),
        |e| matches!(e, TopologyError::Cycle { nodes } if nodes == &["m1", "m1"]),
        &["`m1`"],
    );
}

#[test]
fn zero_redundancy() {
    assert_single(
        &BASE.replacen("redundancy = 2", "redundancy = 0", 1),
        |e| matches!(e, TopologyError::ZeroRedundancy),
        &["redundancy"],
    );
}

#[test]
fn redundancy_larger_than_intermediates() {
    let errors = errors_of(&BASE.replacen("redundancy = 2", "redundancy = 3", 1));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    for (e, node) in errors.iter().zip(["ra", "rb"]) {
        assert!(
            matches!(e, TopologyError::InsufficientRedundancy { node: n, intermediates: 2, redundancy: 3 } if n == node),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("`{node}`")) && msg.contains('2') && msg.contains("k = 3"),
            "{msg}"
        );
    }
    // A regional node fed directly by primaries is not bound by k.
    let direct = BASE
        .replacen("redundancy = 2", "redundancy = 3", 1)
        .replace("parents = [\"m1\", \"m2\"]", "parents = [\"p1\"]");
    assert!(errors_of(&direct).is_empty());
}

#[test]
fn invalid_id_and_region() {
    let text = BASE
        .replace("\"p1\"", "\"P1\"")
        .replacen("region = \"a\"", "region = \"A/B\"", 1);
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(matches!(&errors[0], TopologyError::InvalidId { id } if id == "P1"));
    assert!(
        matches!(&errors[1], TopologyError::InvalidRegion { node, region } if node == "ra" && region == "A/B")
    );
    let long = "x".repeat(65);
    assert!(errors_of(&BASE.replace("\"p1\"", &format!("\"{long}\"")))
        .iter()
        .any(|e| matches!(e, TopologyError::InvalidId { .. })));
}

#[test]
fn invalid_amqp_url() {
    assert_single(
        &BASE.replacen(
            "redundancy = 2",
            "redundancy = 2\namqp_url = \"http://x\"",
            1,
        ),
        |e| matches!(e, TopologyError::InvalidAmqpUrl { node: None, .. }),
        &["http://x"],
    );
    assert_single(
        &BASE.replacen("id = \"m2\"", "id = \"m2\"\namqp_url = \"amqp:/\"", 1),
        |e| matches!(e, TopologyError::InvalidAmqpUrl { node: Some(n), .. } if n == "m2"),
        &["`m2`"],
    );
}

#[test]
fn no_nodes() {
    assert_single(
        "redundancy = 2\n",
        |e| matches!(e, TopologyError::NoNodes),
        &["no nodes"],
    );
}

#[test]
fn all_errors_are_reported_together() {
    let text = BASE
        .replacen("redundancy = 2", "redundancy = 0", 1)
        .replacen("backup = \"rb\"", "backup = \"nope\"", 1)
        .replacen("parents = [\"p1\"]", "parents = [\"ghost\"]", 1);
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let invalid = InvalidTopology {
        path: PathBuf::from("t.toml"),
        errors,
    };
    let msg = invalid.to_string();
    assert!(msg.starts_with("invalid topology file t.toml:"), "{msg}");
    assert_eq!(msg.lines().count(), 4, "{msg}");
}

#[test]
fn line_column_counts_characters() {
    assert_eq!(line_column("ab\ncdé\nx", 0), (1, 1));
    assert_eq!(line_column("ab\ncdé\nx", 3), (2, 1));
    assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
    // Offsets past the end or inside a character do not panic.
    assert_eq!(line_column("é", 1), (1, 1));
    assert_eq!(line_column("a", 99), (1, 2));
}
