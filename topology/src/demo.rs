//! The demo shape (`topology/demo.toml`: two primaries, two intermediates, regional nodes na, eu
//! and asia with backups na→eu→asia→na) generated on given ports with prefixed ids, so tests and
//! benchmarks can run several federations side by side on one broker without sharing queues; and
//! the four-tier shape (`topology/four-tier.toml`: a sub-regional pair between the intermediates
//! and the regional nodes) for the deep stream-through benchmark.

/// Roles of the demo shape, in file order.
pub const ROLES: [&str; 7] = [
    "primary-a",
    "primary-b",
    "mid-1",
    "mid-2",
    "na",
    "eu",
    "asia",
];

/// role, tier, region, parents, backup
pub type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    Option<&'static str>,
);

pub const SHAPE: [Row; 7] = [
    ("primary-a", "primary", None, &[], None),
    ("primary-b", "primary", None, &[], None),
    (
        "mid-1",
        "intermediate",
        None,
        &["primary-a", "primary-b"],
        None,
    ),
    (
        "mid-2",
        "intermediate",
        None,
        &["primary-a", "primary-b"],
        None,
    ),
    (
        "na",
        "regional",
        Some("na"),
        &["mid-1", "mid-2"],
        Some("eu"),
    ),
    (
        "eu",
        "regional",
        Some("eu"),
        &["mid-1", "mid-2"],
        Some("asia"),
    ),
    (
        "asia",
        "regional",
        Some("asia"),
        &["mid-1", "mid-2"],
        Some("na"),
    ),
];

/// The four-tier shape (`topology/four-tier.toml`): the demo's, with sub-1 and sub-2
/// (intermediates whose parents are mid-1 and mid-2) as the regional nodes' parents.
pub fn four_tier() -> Vec<Row> {
    const SUBS: &[&str] = &["sub-1", "sub-2"];
    let mut rows = SHAPE[..4].to_vec();
    for sub in SUBS {
        rows.push((sub, "intermediate", None, &["mid-1", "mid-2"], None));
    }
    rows.extend(
        SHAPE[4..]
            .iter()
            .map(|&(role, tier, region, _, backup)| (role, tier, region, SUBS, backup)),
    );
    rows
}

/// The node id of `role` under `prefix`.
pub fn node_id(prefix: &str, role: &str) -> String {
    format!("{prefix}-{role}")
}

/// A topology file of the demo shape: node `ROLES[i]` listens on `127.0.0.1:ports[i]` with id
/// `PREFIX-ROLE`; `broker` is the file's AMQP URL and `own_broker(role)` a node's own, if any.
pub fn toml(
    prefix: &str,
    ports: &[u16; 7],
    broker: Option<&str>,
    own_broker: impl Fn(&str) -> Option<String>,
) -> String {
    shape_toml(&SHAPE, prefix, ports, broker, own_broker)
}

/// A topology file of `shape`, as [`toml`] makes the demo's: `shape[i]` listens on `ports[i]`.
pub fn shape_toml(
    shape: &[Row],
    prefix: &str,
    ports: &[u16],
    broker: Option<&str>,
    own_broker: impl Fn(&str) -> Option<String>,
) -> String {
    assert_eq!(shape.len(), ports.len(), "one port per node");
    let id = |r: &str| node_id(prefix, r);
    let mut t = String::from("redundancy = 2\n");
    if let Some(b) = broker {
        t.push_str(&format!("amqp_url = {b:?}\n"));
    }
    for ((role, tier, region, parents, backup), port) in shape.iter().zip(ports) {
        t.push_str(&format!(
            "\n[[node]]\nid = {:?}\ntier = {tier:?}\nhttp = \"127.0.0.1:{port}\"\n",
            id(role)
        ));
        if let Some(url) = own_broker(role) {
            t.push_str(&format!("amqp_url = {url:?}\n"));
        }
        if let Some(r) = region {
            t.push_str(&format!("region = {r:?}\n"));
        }
        if !parents.is_empty() {
            let ps: Vec<String> = parents.iter().map(|p| format!("{:?}", id(p))).collect();
            t.push_str(&format!("parents = [{}]\n", ps.join(", ")));
        }
        if let Some(b) = backup {
            t.push_str(&format!("backup = {:?}\n", id(b)));
        }
    }
    t
}

/// Seven distinct ports free right now, below the kernel's ephemeral range
/// ([`crate::broker::node_port_range`]), so that no outgoing connection is handed one before its
/// node binds it. Picked at random: concurrent tests rarely pick the same one.
pub fn free_ports() -> std::io::Result<[u16; 7]> {
    let ports = free_port_list(7)?;
    let mut out = [0u16; 7];
    out.copy_from_slice(&ports);
    Ok(out)
}

/// `n` distinct free ports, as [`free_ports`] picks them.
pub fn free_port_list(n: usize) -> std::io::Result<Vec<u16>> {
    use rand::Rng;
    let (lo, hi) = crate::broker::node_port_range();
    let mut rng = rand::rng();
    let mut ports = Vec::with_capacity(n);
    for _ in 0..2000 {
        let port: u16 = rng.random_range(lo..=hi);
        if !ports.contains(&port) && crate::broker::port_is_free(port) {
            ports.push(port);
            if ports.len() == n {
                return Ok(ports);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("fewer than {n} free ports in {lo}-{hi}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports = free_ports().unwrap();
        let (lo, hi) = crate::broker::node_port_range();
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 7);
        assert!(ports.iter().all(|p| (lo..=hi).contains(p)), "{ports:?}");
        if let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") {
            let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
            assert!(
                ports.iter().all(|&p| p < low),
                "{ports:?} vs ephemeral from {low}"
            );
        }
    }

    #[test]
    fn generated_shape_is_valid_and_matches_the_demo() {
        let text = toml(
            "t1",
            &[7101, 7102, 7111, 7112, 7121, 7122, 7123],
            Some("amqp://h/%2f"),
            |r| (r == "primary-b").then(|| "amqp://other/%2f".to_owned()),
        );
        let topo = docfed_shared::Topology::parse(&text).unwrap();
        topo.validate().unwrap();
        let demo = docfed_shared::Topology::parse(include_str!("../demo.toml")).unwrap();
        assert_eq!(topo.nodes.len(), demo.nodes.len());
        for (a, b) in topo.nodes.iter().zip(&demo.nodes) {
            assert_eq!(a.id, format!("t1-{}", b.id));
            assert_eq!((a.tier, &a.region, a.http), (b.tier, &b.region, b.http));
        }
        assert_eq!(topo.amqp_url_for("t1-primary-b"), "amqp://other/%2f");
    }

    #[test]
    fn generated_four_tier_shape_is_valid_and_matches_its_file() {
        let ports = [7201, 7202, 7211, 7212, 7231, 7232, 7221, 7222, 7223];
        let text = shape_toml(&four_tier(), "t1", &ports, Some("amqp://h/%2f"), |_| None);
        let topo = docfed_shared::Topology::parse(&text).unwrap();
        topo.validate().unwrap();
        let file = docfed_shared::Topology::parse(include_str!("../four-tier.toml")).unwrap();
        file.validate().unwrap();
        assert_eq!(topo.nodes.len(), file.nodes.len());
        for (a, b) in topo.nodes.iter().zip(&file.nodes) {
            assert_eq!(a.id, format!("t1-{}", b.id));
            assert_eq!((a.tier, &a.region, a.http), (b.tier, &b.region, b.http));
            let parents: Vec<String> = b.parents.iter().map(|p| format!("t1-{p}")).collect();
            assert_eq!(a.parents, parents);
        }
    }
}
