//! The rendered policies, compiled by `palisade_kube::eval`, as one
//! nftables table.
//!
//! Cilium decides a flow twice: egress at the sender, ingress at the
//! receiver ("policy must be configured on both sides", docs "Layer 3
//! Examples"). The table does the same with a constant number of lookups
//! per new flow, however many endpoints and policies there are: the
//! `forward` hook accepts established flows, then one interval-map lookup
//! by source address jumps to the sender's egress chain (or straight to
//! ingress when the sender enforces nothing, like the world or a node); that
//! chain looks the flow up in its deny set (drop: deny wins, docs "Deny
//! Policies"), then its allow set, then applies default deny or not; the
//! `ingress` chain does the same by destination. No chain lists endpoints.
//!
//! The whole table is replaced in one `nft -f` transaction (declare, delete,
//! redefine), so a sync is atomic: no packet ever sees half a ruleset.

use ipnet::Ipv6Net;
use palisade_kube::eval::{Compiled, DirPolicy, Grant, Proto};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv6Addr;

/// The one nftables table, inside the router namespace.
pub const TABLE: &str = "palisade_lab";

/// One lab endpoint as the table knows it: a display name and its nets.
#[derive(Debug, Clone, Copy)]
pub struct NftEndpoint<'a> {
    /// `acme/api`, `gateway/central`, `internet`, ...
    pub name: &'a str,
    /// Its addresses (a deployment's subnet, a stand-in's /128s).
    pub nets: &'a [Ipv6Net],
}

/// What the table is compiled from.
#[derive(Debug)]
pub struct TableInput<'a> {
    /// Every endpoint, indexed as in `compiled`.
    pub endpoints: Vec<NftEndpoint<'a>>,
    /// Their policies.
    pub compiled: &'a Compiled,
    /// World addresses: traffic to them from an egress-gateway tenant is
    /// SNATed to its egress address.
    pub world: Vec<Ipv6Net>,
    /// Source subnet → egress address (`cilium-egress-gateway` tenants).
    pub snat: Vec<(Ipv6Net, Ipv6Addr)>,
}

/// Which way a chain judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Egress,
    Ingress,
}

impl Way {
    fn prefix(self) -> &'static str {
        match self {
            Way::Egress => "eg",
            Way::Ingress => "in",
        }
    }
    fn peer_field(self) -> &'static str {
        match self {
            Way::Egress => "daddr",
            Way::Ingress => "saddr",
        }
    }
    /// Where a flow this direction lets through goes next.
    fn pass(self) -> &'static str {
        match self {
            Way::Egress => "goto ingress",
            Way::Ingress => "accept",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Way::Egress => "egress",
            Way::Ingress => "ingress",
        }
    }
}

/// The name of endpoint `index`'s chain for egress or ingress.
pub fn chain_name(egress: bool, index: usize) -> String {
    let way = if egress { Way::Egress } else { Way::Ingress };
    format!("{}_{index}", way.prefix())
}

fn net(n: &Ipv6Net) -> String {
    if n.prefix_len() == 128 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Sctp => "sctp",
    }
}

/// nftables comments are at most 128 bytes.
fn comment(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('"', "'")
}

fn list(out: &mut String, elements: &BTreeSet<String>) {
    if !elements.is_empty() {
        let items: Vec<&str> = elements.iter().map(String::as_str).collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
    }
}

fn set_decl(out: &mut String, name: &str, ty: &str, elements: &BTreeSet<String>) {
    let _ = writeln!(out, "\tset {name} {{\n\t\ttype {ty}\n\t\tflags interval");
    list(out, elements);
    out.push_str("\t}\n");
}

fn map_decl(out: &mut String, name: &str, ty: &str, elements: &BTreeSet<String>) {
    let _ = writeln!(out, "\tmap {name} {{\n\t\ttype {ty}\n\t\tflags interval");
    list(out, elements);
    out.push_str("\t}\n");
}

/// `peer net . proto . ports` elements of `grants`; overlapping and
/// adjacent port ranges of one (net, protocol) are merged, since an
/// interval set refuses overlapping elements.
fn elements(grants: &[Grant], endpoints: &[NftEndpoint<'_>]) -> BTreeSet<String> {
    let mut ranges: BTreeMap<(String, Proto), Vec<(u16, u16)>> = BTreeMap::new();
    for g in grants {
        for n in endpoints[g.peer].nets {
            for p in &g.ports {
                ranges
                    .entry((net(n), p.proto))
                    .or_default()
                    .push((p.lo, p.hi));
            }
        }
    }
    let mut out = BTreeSet::new();
    for ((n, proto), mut rs) in ranges {
        rs.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (lo, hi) in rs {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        for (lo, hi) in merged {
            let ports = if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            };
            out.insert(format!("{n} . {} . {ports}", proto_name(proto)));
        }
    }
    out
}

/// The sets and chain of one endpoint in one direction.
fn endpoint_chain(
    decls: &mut String,
    chains: &mut String,
    input: &TableInput<'_>,
    (way, index): (Way, usize),
    policy: &DirPolicy,
) {
    let chain = format!("{}_{index}", way.prefix());
    let who = input.endpoints[index].name;
    let key = format!("ip6 {} . meta l4proto . th dport", way.peer_field());
    let ty = "ipv6_addr . inet_proto . inet_service";
    let _ = writeln!(chains, "\tchain {chain} {{");
    for (suffix, grants, verdict) in [
        ("deny", &policy.deny, "drop"),
        ("allow", &policy.allow, way.pass()),
    ] {
        let elems = elements(grants, &input.endpoints);
        if elems.is_empty() {
            continue;
        }
        set_decl(decls, &format!("{chain}_{suffix}"), ty, &elems);
        let note = comment(&format!("{who}: {} {suffix}", way.name()));
        let _ = writeln!(
            chains,
            "\t\t{key} @{chain}_{suffix} counter {verdict} comment \"{note}\""
        );
    }
    let last = match &policy.default_deny {
        Some(d) => format!(
            "counter drop comment \"{}\"",
            comment(&format!("{who}: {} {d}", way.name()))
        ),
        None => format!(
            "{} comment \"{}\"",
            way.pass(),
            comment(&format!("{who}: no {} policy", way.name()))
        ),
    };
    let _ = writeln!(chains, "\t\t{last}\n\t}}");
}

/// `net : verdict` of every endpoint for one direction's dispatch map.
fn dispatch(input: &TableInput<'_>, way: Way) -> BTreeSet<String> {
    let policies = match way {
        Way::Egress => &input.compiled.egress,
        Way::Ingress => &input.compiled.ingress,
    };
    let mut out = BTreeSet::new();
    for (i, (ep, policy)) in input.endpoints.iter().zip(policies).enumerate() {
        let verdict = match policy {
            Some(_) => format!("goto {}_{i}", way.prefix()),
            // Not a Cilium endpoint: nothing of its own to enforce.
            None => way.pass().to_owned(),
        };
        for n in ep.nets {
            out.insert(format!("{} : {verdict}", net(n)));
        }
    }
    out
}

/// The complete ruleset text for the router namespace: a declare/delete/
/// redefine sequence that `nft -f` applies as one transaction.
pub fn ruleset(input: &TableInput<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `palisade lab` from the rendered Cilium policies; replaced whole on every sync.\n\
         table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    let mut chains = String::new();
    for (way, policies) in [
        (Way::Egress, &input.compiled.egress),
        (Way::Ingress, &input.compiled.ingress),
    ] {
        for (i, p) in policies.iter().enumerate() {
            if let Some(p) = p {
                endpoint_chain(&mut out, &mut chains, input, (way, i), p);
            }
        }
    }
    let world: BTreeSet<String> = input.world.iter().map(net).collect();
    set_decl(&mut out, "world", "ipv6_addr", &world);
    let snat: BTreeSet<String> = input
        .snat
        .iter()
        .map(|(n, ip)| format!("{} : {ip}", net(n)))
        .collect();
    map_decl(&mut out, "egress_snat", "ipv6_addr : ipv6_addr", &snat);
    map_decl(
        &mut out,
        "egress_of",
        "ipv6_addr : verdict",
        &dispatch(input, Way::Egress),
    );
    map_decl(
        &mut out,
        "ingress_of",
        "ipv6_addr : verdict",
        &dispatch(input, Way::Ingress),
    );
    out.push_str(&chains);
    out.push_str(FIXED_CHAINS);
    out
}

/// The hooks: established flows pass, new ones go through the sender's
/// egress chain and the receiver's ingress chain; addresses the lab does
/// not know are dropped.
const FIXED_CHAINS: &str = "\tchain ingress {\n\
     \t\tip6 daddr vmap @ingress_of\n\
     \t\tcounter drop comment \"unknown destination\"\n\
     \t}\n\
     \tchain forward {\n\
     \t\ttype filter hook forward priority filter; policy drop;\n\
     \t\tct state established,related accept\n\
     \t\tct state invalid drop\n\
     \t\tip6 saddr vmap @egress_of\n\
     \t\tcounter comment \"unknown source\"\n\
     \t}\n\
     \tchain postrouting {\n\
     \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
     \t\tip6 daddr @world snat ip6 to ip6 saddr map @egress_snat\n\
     \t}\n\
     }\n";
