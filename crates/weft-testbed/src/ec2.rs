//! An EC2-like VPC on the testbed (opt-in: nothing changes until [`Testbed::enable_ec2`]).
//!
//! What makes EC2 different from the flat switch, emulated inside the bed's namespaces:
//!
//! - **The source/destination check.** Every node's port on the switch is an ENI: a
//!   bridge-family nftables table in the switch namespace (`table bridge weft_ec2`) drops an
//!   IPv4 frame that enters from a port with a source address that is not one of that ENI's
//!   addresses, and one leaving to a port for an address that is not the ENI's (one set of
//!   addresses per port, `@<port>`; the drop rules count what they drop).
//! - **The VPC router.** The switch routes between its ports (`br0` is the subnet's gateway
//!   10.250.0.1 with forwarding on and redirects off), as the VPC does for traffic sent to
//!   the gateway, e.g. by an ENI's route table. It has no route to anything outside
//!   10.250.0.0/16, like a VPC has none to an overlay network.
//! - **Secondary ENIs.** [`Testbed::add_secondary_eni`] adds `eth1` (a second veth to the
//!   switch) with the VPC CNI's table 2 (`10.250.0.1 dev eth1 scope link`, `default via
//!   10.250.0.1 dev eth1`), the `32765: from <ENI IP> lookup 2` rule, and the ENI subnet's
//!   route removed from the main table, as ipamd sets them up (eks-vpc-cni.md §1.5). The
//!   nodes answer ARP only on the interface that holds the address (`arp_ignore=1`,
//!   `arp_announce=2`), so each address lives on its own ENI as in a VPC.
//! - **VPC CNI pods.** [`Testbed::add_vpc_pod`] plumbs a pod the way the VPC CNI's plugin
//!   does: a secondary address of `eth1` on the pod's `eth0` (/32, default via 169.254.1.1
//!   with a static neighbour), the host veth `eni<11 hex>`, `<pod IP> dev eni... scope link`
//!   in main, `512: to <pod IP> lookup main` and `1536: from <pod IP> lookup 2`. The VPC's
//!   knowledge that the address belongs to the ENI is a proxy neighbour entry on `eth1`.
//!   [`Testbed::delete_vpc_pod`] deletes the pod's namespace (veth and route go with it, the
//!   rules stay, as with aws-cni's DEL while ipamd is gone).

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use tracing::debug;

use crate::{SWITCH_IP, Testbed, TestbedError, UNDERLAY_PREFIX, cmd};

/// The nftables table (bridge family) holding the source/destination check.
pub const EC2_TABLE: &str = "weft_ec2";
/// The ENI route table of `eth1` (device number 1 + 1, as the VPC CNI numbers them).
pub const ENI_TABLE: u32 = 2;
/// The VPC CNI's pod gateway (a static neighbour in every pod).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Most nodes an EC2 bed supports (ENI and pod addresses are per node).
pub const MAX_EC2_NODES: usize = 200;

/// Address of node `index`'s secondary ENI `eth1`: 10.250.2.(index + 1).
pub fn secondary_eni_ip(index: usize) -> Option<Ipv4Addr> {
    if index >= MAX_EC2_NODES {
        return None;
    }
    Some(Ipv4Addr::new(10, 250, 2, u8::try_from(index + 1).ok()?))
}

/// Address of the `j`-th VPC CNI pod of node `index`: a secondary address of its `eth1`,
/// 10.250.(10 + index).(10 + j).
pub fn vpc_pod_ip(index: usize, j: usize) -> Option<Ipv4Addr> {
    if index >= MAX_EC2_NODES || j >= 240 {
        return None;
    }
    Some(Ipv4Addr::new(
        10,
        250,
        u8::try_from(10 + index).ok()?,
        u8::try_from(10 + j).ok()?,
    ))
}

/// The switch port of node `index`'s ENI `dev` (`n0` for eth0, `n0e1` for eth1).
pub fn eni_port(index: usize, dev: &str) -> String {
    match dev.strip_prefix("eth") {
        Some("0") => format!("n{index}"),
        Some(n) => format!("n{index}e{n}"),
        None => format!("n{index}{dev}"),
    }
}

/// A pod plumbed like the VPC CNI plumbs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcPod {
    /// `<id>-n<i>p<j>`.
    pub ns: String,
    pub ip: Ipv4Addr,
    pub node: usize,
    /// The host veth, `eni` + 11 hex digits.
    pub host_veth: String,
}

impl Testbed {
    /// Turns the switch into an EC2 VPC: the source/destination check on every node's port,
    /// the switch routing between ports, and the nodes' ARP and rp_filter settings of an EC2
    /// instance with the VPC CNI (`rp_filter=2` on the primary ENI). Call it once, before
    /// [`Testbed::add_secondary_eni`]; nodes added later are not covered.
    pub fn enable_ec2(&mut self) -> Result<(), TestbedError> {
        self.check_live()?;
        if self.nodes.len() > MAX_EC2_NODES {
            return Err(TestbedError::Invalid(format!(
                "enable_ec2: at most {MAX_EC2_NODES} nodes are supported"
            )));
        }
        let sw = self.sw_ns.clone();
        let hint = format!("making testbed {} an EC2 VPC", self.id);
        for s in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.br0.send_redirects=0",
        ] {
            self.exec(&sw, &["sysctl", "-q", "-w", s])?;
        }
        let mut script = format!(
            "add table bridge {EC2_TABLE}\n\
             add chain bridge {EC2_TABLE} ingress {{ type filter hook prerouting priority 0; policy accept; }}\n\
             add chain bridge {EC2_TABLE} egress {{ type filter hook postrouting priority 0; policy accept; }}\n"
        );
        let nodes = self.nodes.clone();
        for n in &nodes {
            script.push_str(&port_rules(&n.name, &[n.ip]));
        }
        self.nft_switch(&script, &hint)?;
        for n in &nodes {
            for s in [
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.eth0.rp_filter=2",
            ] {
                self.exec(&n.ns, &["sysctl", "-q", "-w", s])?;
            }
        }
        debug!(id = %self.id, "EC2 mode on");
        Ok(())
    }

    /// Attaches a secondary ENI `eth1` to `node` as ipamd sets one up (see the module docs)
    /// and returns its address. Needs [`Testbed::enable_ec2`] first.
    pub fn add_secondary_eni(&mut self, node: usize) -> Result<Ipv4Addr, TestbedError> {
        self.check_live()?;
        let n = self.node_checked(node, "add_secondary_eni")?;
        let ip = secondary_eni_ip(node).ok_or_else(|| {
            TestbedError::Invalid(format!(
                "add_secondary_eni: node {node} is beyond {MAX_EC2_NODES}"
            ))
        })?;
        let port = eni_port(node, "eth1");
        let mtu = self.cfg.underlay_mtu;
        let hint = format!("adding eth1 to node {} of testbed {}", n.ns, self.id);
        let sw = self.sw_ns.clone();
        cmd::start_ip_batch(
            Some(&sw),
            &[
                format!(
                    "link add {port} mtu {mtu} type veth peer name eth1 mtu {mtu} netns {}",
                    n.ns
                ),
                format!("link set {port} master br0"),
                format!("link set {port} up"),
            ],
            &hint,
        )?
        .finish()?;
        self.nft_switch(&port_rules(&port, &[ip]), &hint)?;
        self.exec(
            &n.ns,
            &["sysctl", "-q", "-w", "net.ipv4.conf.eth1.rp_filter=2"],
        )?;
        cmd::start_ip_batch(
            Some(&n.ns),
            &[
                format!("addr add {ip}/{UNDERLAY_PREFIX} dev eth1"),
                "link set eth1 up".to_string(),
                format!("route del 10.250.0.0/{UNDERLAY_PREFIX} dev eth1 table main"),
            ],
            &hint,
        )?
        .finish()?;
        self.program_eni_table(node)?;
        Ok(ip)
    }

    /// (Re)writes ipamd's table 2 for `node`'s `eth1` and its `32765: from <ENI IP> lookup 2`
    /// rule (e.g. after a cleanup flushed them).
    pub fn program_eni_table(&mut self, node: usize) -> Result<(), TestbedError> {
        let n = self.node_checked(node, "program_eni_table")?;
        let ip = secondary_eni_ip(node).ok_or_else(|| {
            TestbedError::Invalid(format!(
                "program_eni_table: node {node} is beyond {MAX_EC2_NODES}"
            ))
        })?;
        let t = ENI_TABLE;
        cmd::start_ip_batch(
            Some(&n.ns),
            &[
                format!("route replace {SWITCH_IP}/32 dev eth1 scope link table {t}"),
                format!("route replace default via {SWITCH_IP} dev eth1 table {t}"),
                format!("rule add priority 32765 from {ip} lookup {t}"),
            ],
            &format!("programming table {t} on node {}", n.ns),
        )?
        .finish()?;
        Ok(())
    }

    /// A pod on `node`'s secondary ENI, plumbed as the VPC CNI's plugin plumbs one (see the
    /// module docs), with the `mtu` of the ENI.
    pub fn add_vpc_pod(&mut self, node: usize, mtu: u32) -> Result<VpcPod, TestbedError> {
        self.check_live()?;
        let n = self.node_checked(node, "add_vpc_pod")?;
        let j = self.pods_per_node[node];
        let ip = vpc_pod_ip(node, j).ok_or_else(|| {
            TestbedError::Invalid(format!("add_vpc_pod: too many pods on node {node}"))
        })?;
        self.pods_per_node[node] += 1;
        let ns = format!("{}p{j}", n.ns);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.id, node, j).hash(&mut h);
        let host_veth = format!("eni{:011x}", h.finish() & 0xfff_ffff_ffff);
        let mac = format!(
            "02:0e:{:02x}:{:02x}:{:02x}:01",
            node / 256,
            node % 256,
            j % 256
        );
        let hint = format!(
            "plumbing VPC CNI pod {ns} on node {} of testbed {}",
            n.ns, self.id
        );
        self.namespaces.push(ns.clone());
        cmd::start_ip_batch(None, &[format!("netns add {ns}")], &hint)?.finish()?;
        let t = ENI_TABLE;
        cmd::start_ip_batch(
            Some(&n.ns),
            &[
                format!(
                    "link add {host_veth} address {mac} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {ns}"
                ),
                format!("link set {host_veth} up"),
                format!("route add {ip}/32 dev {host_veth} scope link"),
                format!("rule add priority 512 to {ip} lookup main"),
                format!("rule add priority 1536 from {ip} lookup {t}"),
                format!("neigh add proxy {ip} dev eth1"),
            ],
            &hint,
        )?
        .finish()?;
        cmd::start_ip_batch(
            Some(&ns),
            &[
                "link set lo up".to_string(),
                format!("addr add {ip}/32 dev eth0"),
                "link set eth0 up".to_string(),
                format!("route add {POD_GATEWAY} dev eth0 scope link"),
                format!("route add default via {POD_GATEWAY} dev eth0"),
                format!("neigh add {POD_GATEWAY} lladdr {mac} dev eth0 nud permanent"),
            ],
            &hint,
        )?
        .finish()?;
        self.nft_switch(
            &format!(
                "add element bridge {EC2_TABLE} {} {{ {ip} }}\n",
                eni_port(node, "eth1")
            ),
            &hint,
        )?;
        self.write_manifest();
        Ok(VpcPod {
            ns,
            ip,
            node,
            host_veth,
        })
    }

    /// Deletes a VPC CNI pod's namespace: its veth and host route go, its ip rules stay (as
    /// aws-cni's DEL with ipamd gone leaves them), its address stays assigned to the ENI.
    /// Returns once the kernel has destroyed the namespace (its host veth is gone), which
    /// happens after the last process or socket in it is gone and is asynchronous.
    pub fn delete_vpc_pod(&mut self, pod: &VpcPod) -> Result<(), TestbedError> {
        self.check_live()?;
        self.check_ns(&pod.ns)?;
        cmd::start_ip_batch(
            None,
            &[format!("netns del {}", pod.ns)],
            &format!("deleting VPC CNI pod {}", pod.ns),
        )?
        .finish()?;
        let node_ns = self.node_checked(pod.node, "delete_vpc_pod")?.ns;
        let timeout = std::time::Duration::from_secs(10);
        let gone = crate::wait_until(timeout, std::time::Duration::from_millis(20), || {
            let out = std::process::Command::new("ip")
                .args(["-n", &node_ns, "link", "show", "dev", &pod.host_veth])
                .output()
                .ok()?;
            (!out.status.success()).then_some(())
        });
        gone.ok_or_else(|| {
            TestbedError::Invalid(format!(
                "delete_vpc_pod: {} still exists in {node_ns} {timeout:?} after `ip netns del {}` (a process or socket still holds the namespace)",
                pod.host_veth, pod.ns
            ))
        })
    }

    /// What the source/destination check has dropped so far, by port and direction
    /// (`n0e1 ingress`: frames from that ENI with a foreign source address).
    pub fn ec2_drops(&self) -> Result<Vec<(String, u64)>, TestbedError> {
        let sw = self.sw_ns.clone();
        let text = self.exec(&sw, &["nft", "-j", "list", "table", "bridge", EC2_TABLE])?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            TestbedError::Invalid(format!("nft -j list table bridge {EC2_TABLE}: {e}"))
        })?;
        let mut out = Vec::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            let Some(rule) = item.get("rule") else {
                continue;
            };
            let chain = rule["chain"].as_str().unwrap_or_default();
            let mut port = String::new();
            let mut packets = 0;
            for e in rule["expr"].as_array().into_iter().flatten() {
                if let Some(r) = e["match"]["right"].as_str()
                    && e["match"]["left"]["meta"]["key"]
                        .as_str()
                        .is_some_and(|k| k.ends_with("ifname"))
                {
                    port = r.to_string();
                }
                if let Some(p) = e["counter"]["packets"].as_u64() {
                    packets = p;
                }
            }
            out.push((format!("{port} {chain}"), packets));
        }
        Ok(out)
    }

    fn node_checked(&self, node: usize, what: &str) -> Result<crate::Node, TestbedError> {
        self.nodes.get(node).cloned().ok_or_else(|| {
            TestbedError::Invalid(format!(
                "{what}: node {node} does not exist (testbed {} has {} nodes)",
                self.id,
                self.nodes.len()
            ))
        })
    }

    fn nft_switch(&self, script: &str, hint: &str) -> Result<(), TestbedError> {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.sw_ns, "nft", "-f", "-"]);
        cmd::start_with_stdin(c, script.to_string(), hint)?.finish()?;
        Ok(())
    }
}

/// The set of `port`'s addresses and its two drop rules.
fn port_rules(port: &str, addrs: &[Ipv4Addr]) -> String {
    let list: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
    format!(
        "add set bridge {EC2_TABLE} {port} {{ type ipv4_addr; }}\n\
         add element bridge {EC2_TABLE} {port} {{ {} }}\n\
         add rule bridge {EC2_TABLE} ingress iifname \"{port}\" ether type ip ip saddr != @{port} counter drop\n\
         add rule bridge {EC2_TABLE} egress oifname \"{port}\" ether type ip ip daddr != @{port} counter drop\n",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports() {
        assert_eq!(secondary_eni_ip(0), Some(Ipv4Addr::new(10, 250, 2, 1)));
        assert_eq!(secondary_eni_ip(MAX_EC2_NODES), None);
        assert_eq!(vpc_pod_ip(2, 0), Some(Ipv4Addr::new(10, 250, 12, 10)));
        assert_eq!(vpc_pod_ip(0, 240), None);
        assert_eq!(eni_port(3, "eth0"), "n3");
        assert_eq!(eni_port(3, "eth1"), "n3e1");
        let r = port_rules("n0e1", &[Ipv4Addr::new(10, 250, 2, 1)]);
        assert!(r.contains("iifname \"n0e1\" ether type ip ip saddr != @n0e1 counter drop"));
        assert!(r.contains("{ 10.250.2.1 }"));
    }
}
