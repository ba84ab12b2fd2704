//! The documents `weft eks plan` reads, as the user pastes or pipes them: the output of
//! `aws ec2 describe-instance-types`, `kubectl get nodes -o json`,
//! `kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o json` and
//! `kubectl get apiservices -o json`. Pure: bytes in, typed data out.
//!
//! Only the fields the plan uses are read. A field the plan needs that has the wrong type is an
//! error naming its JSON path (`items[2].status.capacity.pods`), so a truncated or hand-edited
//! paste is caught instead of silently planning with a default.

use std::fmt;

use serde_json::{Map, Value};

use super::max_pods::EniLimits;

/// What is wrong where in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// JSON path of the offending value (`""` for the whole document).
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the top level: {}", self.problem)
        } else {
            write!(f, "at {}: {}", self.path, self.problem)
        }
    }
}

/// Parses bytes as one JSON document; the error keeps serde_json's line and column.
pub fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    if text.trim().is_empty() {
        return Err("it is empty".into());
    }
    serde_json::from_str(text).map_err(|e| format!("it is not valid JSON ({e})"))
}

/// Describes a JSON value for error messages, with the value itself when it is short.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Appends an object key to a path: `.key`, or `["node.kubernetes.io/instance-type"]` for keys
/// that are not plain identifiers.
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (plain, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{key:?}]"),
    }
}

/// A value and the path that led to it.
#[derive(Debug, Clone)]
struct At<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> At<'a> {
    fn root(value: &'a Value) -> At<'a> {
        At {
            value,
            path: String::new(),
        }
    }

    fn error(&self, problem: impl Into<String>) -> PathError {
        PathError {
            path: self.path.clone(),
            problem: problem.into(),
        }
    }

    fn object(&self) -> Result<&'a Map<String, Value>, PathError> {
        self.value.as_object().ok_or_else(|| {
            self.error(format!(
                "expected an object, found {}",
                describe(self.value)
            ))
        })
    }

    /// The member `key`; `None` when it is absent or null.
    fn get(&self, key: &str) -> Result<Option<At<'a>>, PathError> {
        Ok(self
            .object()?
            .get(key)
            .filter(|v| !v.is_null())
            .map(|value| At {
                value,
                path: join(&self.path, key),
            }))
    }

    /// The member `key`, which must be present.
    fn need(&self, key: &str) -> Result<At<'a>, PathError> {
        self.get(key)?.ok_or_else(|| PathError {
            path: join(&self.path, key),
            problem: "is missing".into(),
        })
    }

    fn as_str(&self) -> Result<&'a str, PathError> {
        self.value
            .as_str()
            .ok_or_else(|| self.error(format!("expected a string, found {}", describe(self.value))))
    }

    fn as_u32(&self) -> Result<u32, PathError> {
        self.value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                self.error(format!(
                    "expected a whole number, found {}",
                    describe(self.value)
                ))
            })
    }

    fn as_array(&self) -> Result<Vec<At<'a>>, PathError> {
        let items = self.value.as_array().ok_or_else(|| {
            self.error(format!("expected an array, found {}", describe(self.value)))
        })?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| At {
                value,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    fn str_member(&self, key: &str) -> Result<Option<&'a str>, PathError> {
        self.get(key)?.map(|a| a.as_str()).transpose()
    }

    fn need_str(&self, key: &str) -> Result<&'a str, PathError> {
        self.need(key)?.as_str()
    }

    /// The member at `keys` below this value; `None` when any of them is absent or null.
    fn dig(&self, keys: &[&str]) -> Result<Option<At<'a>>, PathError> {
        let mut at = self.clone();
        for key in keys {
            match at.get(key)? {
                Some(next) => at = next,
                None => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// `metadata.labels[key]`, when present.
    fn label(&self, key: &str) -> Result<Option<&'a str>, PathError> {
        self.dig(&["metadata", "labels"])?
            .map_or(Ok(None), |labels| labels.str_member(key))
    }
}

/// The items of a kubectl list (`{"kind": "List", "items": [...]}`), or a single object of one
/// of `kinds` (`kubectl get <kind> <name> -o json`). Items that name another kind are rejected,
/// which catches a file passed to the wrong flag.
fn kube_items<'a>(doc: &'a Value, kinds: &[&str]) -> Result<Vec<At<'a>>, PathError> {
    let root = At::root(doc);
    root.object()?;
    let items = match root.get("items")? {
        Some(items) => items.as_array()?,
        None => match root.str_member("kind")? {
            Some(kind) if kinds.contains(&kind) => vec![root],
            Some(kind) => {
                return Err(PathError {
                    path: "kind".into(),
                    problem: format!("expected a List or {}, found {kind:?}", kinds.join(" or ")),
                });
            }
            None => return Err(root.error("expected a kubectl list with \"items\"")),
        },
    };
    for item in &items {
        item.object()?;
        if let Some(kind) = item.str_member("kind")?
            && !kinds.contains(&kind)
        {
            return Err(PathError {
                path: join(&item.path, "kind"),
                problem: format!("expected {}, found {kind:?}", kinds.join(" or ")),
            });
        }
    }
    Ok(items)
}

/// An instance type from `aws ec2 describe-instance-types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceType {
    pub name: String,
    pub limits: EniLimits,
    /// `MemoryInfo.SizeInMiB`, when present.
    pub memory_mib: Option<u64>,
}

/// Reads `{"InstanceTypes": [...]}` (or the bare array). ENIs count network card 0 only, as
/// the VPC CNI and nodeadm do: on multi-card types `NetworkInfo.MaximumNetworkInterfaces` is the
/// total over all cards, so the default card's own `MaximumNetworkInterfaces` is used.
pub fn parse_instance_types(doc: &Value) -> Result<Vec<InstanceType>, PathError> {
    let root = At::root(doc);
    let list = if doc.is_array() {
        root.as_array()?
    } else {
        root.need("InstanceTypes")?.as_array()?
    };
    let mut out = Vec::new();
    for it in list {
        let name = it.need_str("InstanceType")?.to_string();
        let net = it.need("NetworkInfo")?;
        let enis = match card_zero_enis(&net)? {
            Some(n) => n,
            None => net.need("MaximumNetworkInterfaces")?.as_u32()?,
        };
        let ips = net.need("Ipv4AddressesPerInterface")?;
        let ipv4_per_eni = ips.as_u32()?;
        if enis == 0 {
            return Err(PathError {
                path: join(&net.path, "MaximumNetworkInterfaces"),
                problem: "is 0; an instance has at least one network interface".into(),
            });
        }
        if ipv4_per_eni == 0 {
            return Err(ips.error("is 0; an interface has at least its primary address"));
        }
        let memory_mib = it
            .dig(&["MemoryInfo", "SizeInMiB"])?
            .map(|m| m.as_u32().map(u64::from))
            .transpose()?;
        out.push(InstanceType {
            name,
            limits: EniLimits { enis, ipv4_per_eni },
            memory_mib,
        });
    }
    Ok(out)
}

/// `MaximumNetworkInterfaces` of the default network card when the type has several cards.
fn card_zero_enis(net: &At<'_>) -> Result<Option<u32>, PathError> {
    let Some(cards) = net.get("NetworkCards")? else {
        return Ok(None);
    };
    let cards = cards.as_array()?;
    if cards.len() < 2 {
        return Ok(None);
    }
    let default = match net.get("DefaultNetworkCardIndex")? {
        Some(i) => i.as_u32()?,
        None => 0,
    };
    for card in &cards {
        let index = match card.get("NetworkCardIndex")? {
            Some(i) => i.as_u32()?,
            None => continue,
        };
        if index == default {
            return card.need("MaximumNetworkInterfaces")?.as_u32().map(Some);
        }
    }
    Ok(None)
}

/// A node from `kubectl get nodes -o json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `node.kubernetes.io/instance-type` (or the older `beta.kubernetes.io/instance-type`).
    pub instance_type: Option<String>,
    /// `eks.amazonaws.com/compute-type` (`fargate`, `hybrid`, `auto`; absent on EC2 nodes).
    pub compute_type: Option<String>,
    /// `eks.amazonaws.com/nodegroup`: set on nodes of EKS managed node groups.
    pub nodegroup: Option<String>,
    /// `status.capacity.pods`: kubelet's current maxPods.
    pub capacity_pods: Option<u32>,
    /// `spec.podCIDR`.
    pub pod_cidr: Option<String>,
    /// The EC2 instance ID, from `spec.providerID` (`aws:///us-east-1a/i-0123...`).
    pub instance_id: Option<String>,
    /// `status.nodeInfo.osImage`, e.g. `Amazon Linux 2023.6.20250203`.
    pub os_image: Option<String>,
    /// `status.capacity.memory` in MiB, when it is a plain quantity such as `7910348Ki`.
    pub memory_mib: Option<u64>,
}

/// Reads the nodes of a `kubectl get nodes -o json` list (or one node).
pub fn parse_nodes(doc: &Value) -> Result<Vec<Node>, PathError> {
    let mut out = Vec::new();
    for item in kube_items(doc, &["Node"])? {
        let name = item.need("metadata")?.need_str("name")?.to_string();
        let instance_type = match item.label("node.kubernetes.io/instance-type")? {
            Some(t) => Some(t),
            None => item.label("beta.kubernetes.io/instance-type")?,
        };
        let capacity_pods = item
            .dig(&["status", "capacity", "pods"])?
            .map(|p| pod_count(&p))
            .transpose()?;
        let pod_cidr = item
            .dig(&["spec", "podCIDR"])?
            .map(|c| c.as_str())
            .transpose()?;
        let instance_id = item
            .dig(&["spec", "providerID"])?
            .map(|p| p.as_str())
            .transpose()?
            .and_then(|p| p.rsplit('/').next())
            .filter(|id| id.starts_with("i-"));
        let os_image = item
            .dig(&["status", "nodeInfo", "osImage"])?
            .map(|o| o.as_str())
            .transpose()?;
        out.push(Node {
            name,
            instance_type: instance_type.map(str::to_string),
            compute_type: item
                .label("eks.amazonaws.com/compute-type")?
                .map(str::to_string),
            nodegroup: item
                .label("eks.amazonaws.com/nodegroup")?
                .map(str::to_string),
            capacity_pods,
            pod_cidr: pod_cidr.filter(|c| !c.is_empty()).map(str::to_string),
            instance_id: instance_id.map(str::to_string),
            os_image: os_image.map(str::to_string),
            memory_mib: item
                .dig(&["status", "capacity", "memory"])?
                .and_then(|m| m.value.as_str().and_then(memory_mib)),
        });
    }
    Ok(out)
}

/// A memory quantity (`7910348Ki`, `8Gi`, `8053063680`) in MiB; `None` for forms the plan does
/// not need to understand (it only uses memory for a warning).
fn memory_mib(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let bytes = match suffix {
        "" => n,
        "Ki" => n.checked_mul(1 << 10)?,
        "Mi" => n.checked_mul(1 << 20)?,
        "Gi" => n.checked_mul(1 << 30)?,
        "Ti" => n.checked_mul(1 << 40)?,
        "k" => n.checked_mul(1_000)?,
        "M" => n.checked_mul(1_000_000)?,
        "G" => n.checked_mul(1_000_000_000)?,
        _ => return None,
    };
    Some(bytes >> 20)
}

/// A pod count quantity as Kubernetes serializes it (`"29"`), or a plain number.
fn pod_count(at: &At<'_>) -> Result<u32, PathError> {
    match at.value {
        Value::String(s) => s.parse::<u32>().map_err(|_| {
            at.error(format!(
                "expected a pod count such as \"110\", found {}",
                describe(at.value)
            ))
        }),
        _ => at.as_u32(),
    }
}

/// A Service that the API server calls (`clientConfig.service` or `spec.service`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// The Service port (default 443).
    pub port: u32,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

fn service_ref(at: &At<'_>) -> Result<ServiceRef, PathError> {
    Ok(ServiceRef {
        namespace: at.need_str("namespace")?.to_string(),
        name: at.need_str("name")?.to_string(),
        port: match at.get("port")? {
            Some(p) => p.as_u32()?,
            None => 443,
        },
    })
}

/// Where the API server sends a webhook's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// A Service in the cluster: its pods get overlay IPs and become unreachable.
    Service(ServiceRef),
    /// A URL: outside the pod network (EKS's own webhooks use 127.0.0.1 on the control plane).
    Url(String),
}

/// One webhook of a validating or mutating webhook configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `ValidatingWebhookConfiguration` or `MutatingWebhookConfiguration`.
    pub kind: String,
    /// The configuration's name.
    pub configuration: String,
    /// The webhook's name.
    pub name: String,
    pub target: WebhookTarget,
    /// `Fail` (the v1 default) or `Ignore`.
    pub failure_policy: String,
}

/// Reads the webhooks of a list of validating and mutating webhook configurations.
pub fn parse_webhooks(doc: &Value) -> Result<Vec<Webhook>, PathError> {
    const KINDS: [&str; 2] = [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ];
    let mut out = Vec::new();
    for item in kube_items(doc, &KINDS)? {
        let kind = item
            .str_member("kind")?
            .unwrap_or("WebhookConfiguration")
            .to_string();
        let configuration = item.need("metadata")?.need_str("name")?.to_string();
        let Some(hooks) = item.get("webhooks")? else {
            continue;
        };
        for hook in hooks.as_array()? {
            let name = hook.need_str("name")?.to_string();
            let cc = hook.need("clientConfig")?;
            let target = match (cc.get("service")?, cc.str_member("url")?) {
                (Some(svc), _) => WebhookTarget::Service(service_ref(&svc)?),
                (None, Some(url)) => WebhookTarget::Url(url.to_string()),
                (None, None) => {
                    return Err(cc.error("has neither \"service\" nor \"url\""));
                }
            };
            out.push(Webhook {
                kind: kind.clone(),
                configuration: configuration.clone(),
                name,
                target,
                failure_policy: hook
                    .str_member("failurePolicy")?
                    .unwrap_or("Fail")
                    .to_string(),
            });
        }
    }
    Ok(out)
}

/// An APIService from `kubectl get apiservices -o json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiService {
    /// e.g. `v1beta1.metrics.k8s.io`.
    pub name: String,
    /// `spec.service`; `None` for the API server's own (Local) groups.
    pub service: Option<ServiceRef>,
    /// The `Available` condition: status and reason.
    pub available: Option<(String, Option<String>)>,
}

/// A NetworkPolicy, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkPolicyRef {
    pub namespace: String,
    pub name: String,
}

/// Reads the NetworkPolicies of a list (`kubectl get networkpolicy -A -o json`).
pub fn parse_network_policies(doc: &Value) -> Result<Vec<NetworkPolicyRef>, PathError> {
    let mut out = Vec::new();
    for item in kube_items(doc, &["NetworkPolicy"])? {
        let meta = item.need("metadata")?;
        out.push(NetworkPolicyRef {
            namespace: meta
                .str_member("namespace")?
                .unwrap_or("default")
                .to_string(),
            name: meta.need_str("name")?.to_string(),
        });
    }
    Ok(out)
}

/// Reads the APIServices of a list.
pub fn parse_api_services(doc: &Value) -> Result<Vec<ApiService>, PathError> {
    let mut out = Vec::new();
    for item in kube_items(doc, &["APIService"])? {
        let name = item.need("metadata")?.need_str("name")?.to_string();
        let service = item
            .dig(&["spec", "service"])?
            .map(|s| service_ref(&s))
            .transpose()?;
        let mut available = None;
        if let Some(conditions) = item.dig(&["status", "conditions"])? {
            for c in conditions.as_array()? {
                if c.str_member("type")? == Some("Available") {
                    available = Some((
                        c.need_str("status")?.to_string(),
                        c.str_member("reason")?.map(str::to_string),
                    ));
                }
            }
        }
        out.push(ApiService {
            name,
            service,
            available,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_quote_keys_that_are_not_identifiers() {
        assert_eq!(join("", "items"), "items");
        assert_eq!(join("items[0]", "status"), "items[0].status");
        assert_eq!(
            join(
                "items[0].metadata.labels",
                "node.kubernetes.io/instance-type"
            ),
            "items[0].metadata.labels[\"node.kubernetes.io/instance-type\"]"
        );
    }

    #[test]
    fn instance_types_use_the_default_network_card() {
        let doc = json!({"InstanceTypes": [
            {"InstanceType": "m5.large", "NetworkInfo": {
                "MaximumNetworkInterfaces": 3, "Ipv4AddressesPerInterface": 10,
                "NetworkCards": [{"NetworkCardIndex": 0, "MaximumNetworkInterfaces": 3}]}},
            {"InstanceType": "c6in.32xlarge", "NetworkInfo": {
                "MaximumNetworkInterfaces": 16, "Ipv4AddressesPerInterface": 50,
                "DefaultNetworkCardIndex": 0,
                "NetworkCards": [{"NetworkCardIndex": 0, "MaximumNetworkInterfaces": 8},
                                 {"NetworkCardIndex": 1, "MaximumNetworkInterfaces": 8}]}}
        ]});
        let types = parse_instance_types(&doc).unwrap();
        assert_eq!(types[0].limits.eni_max_pods(), 29);
        assert_eq!(types[0].memory_mib, None);
        assert_eq!(
            types[1].limits,
            EniLimits {
                enis: 8,
                ipv4_per_eni: 50
            }
        );
    }

    #[test]
    fn instance_type_errors_name_the_path() {
        let doc = json!({"InstanceTypes": [
            {"InstanceType": "m5.large", "NetworkInfo": {
                "MaximumNetworkInterfaces": 3, "Ipv4AddressesPerInterface": "10"}}]});
        let e = parse_instance_types(&doc).unwrap_err();
        assert_eq!(
            e.to_string(),
            "at InstanceTypes[0].NetworkInfo.Ipv4AddressesPerInterface: expected a whole number, found the string \"10\""
        );
        let e = parse_instance_types(&json!({"Reservations": []})).unwrap_err();
        assert_eq!(e.to_string(), "at InstanceTypes: is missing");
        let e = parse_instance_types(&json!([{"InstanceType": "x", "NetworkInfo": {
            "MaximumNetworkInterfaces": 0, "Ipv4AddressesPerInterface": 2}}]))
        .unwrap_err();
        assert!(e.path.ends_with("MaximumNetworkInterfaces"), "{e}");
    }

    #[test]
    fn nodes_read_labels_capacity_and_pod_cidr() {
        let doc = json!({"kind": "List", "items": [{
            "kind": "Node",
            "metadata": {"name": "ip-10-0-1-10.ec2.internal", "labels": {
                "node.kubernetes.io/instance-type": "m5.large",
                "eks.amazonaws.com/nodegroup": "ng-1"}},
            "spec": {"providerID": "aws:///us-east-1a/i-0123"},
            "status": {"capacity": {"pods": "29"}, "nodeInfo": {"osImage": "Amazon Linux 2023.6.20250203"}}
        }, {
            "kind": "Node",
            "metadata": {"name": "n2", "labels": {"beta.kubernetes.io/instance-type": "t3.small"}},
            "spec": {"podCIDR": "10.244.3.0/24"}
        }]});
        let nodes = parse_nodes(&doc).unwrap();
        assert_eq!(nodes[0].instance_type.as_deref(), Some("m5.large"));
        assert_eq!(nodes[0].nodegroup.as_deref(), Some("ng-1"));
        assert_eq!(nodes[0].capacity_pods, Some(29));
        assert_eq!(nodes[0].pod_cidr, None);
        assert_eq!(nodes[0].instance_id.as_deref(), Some("i-0123"));
        assert_eq!(nodes[1].instance_id, None);
        assert_eq!(nodes[1].instance_type.as_deref(), Some("t3.small"));
        assert_eq!(nodes[1].pod_cidr.as_deref(), Some("10.244.3.0/24"));
        assert_eq!(nodes[1].capacity_pods, None);
        // A single node (kubectl get node <name> -o json) works too.
        let one = parse_nodes(&doc["items"][0]).unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn node_errors_name_the_path() {
        let doc = json!({"items": [{"kind": "Node", "metadata": {"name": "a"},
            "status": {"capacity": {"pods": "lots"}}}]});
        assert_eq!(
            parse_nodes(&doc).unwrap_err().to_string(),
            "at items[0].status.capacity.pods: expected a pod count such as \"110\", found the string \"lots\""
        );
        let doc = json!({"items": [{"kind": "APIService", "metadata": {"name": "a"}}]});
        assert_eq!(
            parse_nodes(&doc).unwrap_err().to_string(),
            "at items[0].kind: expected Node, found \"APIService\""
        );
        let doc = json!({"items": [{"metadata": {"labels": {}}}]});
        assert_eq!(
            parse_nodes(&doc).unwrap_err().to_string(),
            "at items[0].metadata.name: is missing"
        );
        let doc = json!({"items": [{"metadata": {"name": "a", "labels": {"node.kubernetes.io/instance-type": 5}}}]});
        assert_eq!(
            parse_nodes(&doc).unwrap_err().to_string(),
            "at items[0].metadata.labels[\"node.kubernetes.io/instance-type\"]: expected a string, found the number 5"
        );
        assert_eq!(
            parse_nodes(&json!([1])).unwrap_err().to_string(),
            "at the top level: expected an object, found an array"
        );
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_mib("7910348Ki"), Some(7724));
        assert_eq!(memory_mib("1970272Ki"), Some(1924));
        assert_eq!(memory_mib("8Gi"), Some(8192));
        assert_eq!(memory_mib("8053063680"), Some(7680));
        assert_eq!(memory_mib("2000M"), Some(1907));
        assert_eq!(memory_mib("1.5Gi"), None);
        assert_eq!(memory_mib(""), None);
    }

    #[test]
    fn webhooks_split_services_and_urls() {
        let doc = json!({"kind": "List", "items": [
            {"kind": "MutatingWebhookConfiguration", "metadata": {"name": "pod-identity-webhook"},
             "webhooks": [{"name": "iam-for-pods.amazonaws.com",
                           "clientConfig": {"url": "https://127.0.0.1:23443/mutate"},
                           "failurePolicy": "Ignore"}]},
            {"kind": "ValidatingWebhookConfiguration", "metadata": {"name": "cert-manager-webhook"},
             "webhooks": [{"name": "webhook.cert-manager.io",
                           "clientConfig": {"service": {"namespace": "cert-manager",
                               "name": "cert-manager-webhook", "path": "/validate"}}}]},
            {"kind": "ValidatingWebhookConfiguration", "metadata": {"name": "empty"}}
        ]});
        let hooks = parse_webhooks(&doc).unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(
            hooks[0].target,
            WebhookTarget::Url("https://127.0.0.1:23443/mutate".into())
        );
        assert_eq!(hooks[1].failure_policy, "Fail");
        assert_eq!(
            hooks[1].target,
            WebhookTarget::Service(ServiceRef {
                namespace: "cert-manager".into(),
                name: "cert-manager-webhook".into(),
                port: 443
            })
        );
        let bad = json!({"items": [{"kind": "MutatingWebhookConfiguration", "metadata": {"name": "x"},
            "webhooks": [{"name": "h", "clientConfig": {"service": {"namespace": "ns", "name": "s", "port": "443"}}}]}]});
        assert_eq!(
            parse_webhooks(&bad).unwrap_err().to_string(),
            "at items[0].webhooks[0].clientConfig.service.port: expected a whole number, found the string \"443\""
        );
    }

    #[test]
    fn api_services_keep_service_and_availability() {
        let doc = json!({"items": [
            {"kind": "APIService", "metadata": {"name": "v1."}, "spec": {"service": null},
             "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]}},
            {"kind": "APIService", "metadata": {"name": "v1beta1.metrics.k8s.io"},
             "spec": {"service": {"namespace": "kube-system", "name": "metrics-server", "port": 443}},
             "status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck"}]}}
        ]});
        let apis = parse_api_services(&doc).unwrap();
        assert_eq!(apis[0].service, None);
        assert_eq!(
            apis[1].available,
            Some(("False".into(), Some("FailedDiscoveryCheck".into())))
        );
        assert_eq!(
            apis[1].service.as_ref().unwrap().to_string(),
            "kube-system/metrics-server:443"
        );
    }

    #[test]
    fn json_syntax_errors_keep_line_and_column() {
        let e = parse_json(b"{\n  \"items\": [\n").unwrap_err();
        assert!(
            e.starts_with("it is not valid JSON (") && e.contains("line 3"),
            "{e}"
        );
        assert_eq!(parse_json(b"  \n").unwrap_err(), "it is empty");
        assert_eq!(
            parse_json(&[0xff, 0xfe]).unwrap_err(),
            "it is not UTF-8 text"
        );
    }
}
