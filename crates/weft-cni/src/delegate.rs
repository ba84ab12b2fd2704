//! Building the delegate config from the flannel config and subnet.env: pure, no I/O.
//!
//! The rules are flannel's (`cmdAdd`, `doCmdAdd`, `getDelegateIPAM`): start from the
//! `delegate` object, fill in `name`, `type`, `ipMasq`, `mtu`, `isGateway`, `cniVersion`,
//! `runtimeConfig`, and build `ipam` from the top-level `ipam` with `ranges` overwritten from
//! the node's subnet and the cluster networks appended to `routes`. Keys weft-cni does not
//! know are kept untouched.

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::conf::NetConf;
use crate::subnet::FlannelEnv;

/// The delegate used when `delegate.type` is absent.
pub const DEFAULT_DELEGATE_TYPE: &str = "bridge";
/// The IPAM plugin used when `ipam.type` is absent.
pub const DEFAULT_IPAM_TYPE: &str = "host-local";

/// Rejects a `delegate` object flannel would reject, with flannel's messages plus the fix.
pub fn validate_delegate(delegate: Option<&Map<String, Value>>) -> Result<(), Error> {
    let Some(delegate) = delegate else {
        return Ok(());
    };
    if let Some(t) = delegate.get("type")
        && !t.is_string()
    {
        return Err(Error::InvalidConfig(format!(
            "'delegate' dictionary, if present, must have (string) 'type' field; found {t}; write e.g. \"type\": \"bridge\" or leave it out (bridge is the default)"
        )));
    }
    if delegate.contains_key("name") {
        return Err(Error::InvalidConfig(
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel; remove \"name\" from \"delegate\" (the top-level \"name\" is used)".to_string(),
        ));
    }
    if delegate.contains_key("ipam") {
        return Err(Error::InvalidConfig(
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel; move it to a top-level \"ipam\" object (its \"ranges\" are set from subnet.env, its \"routes\" are kept)".to_string(),
        ));
    }
    Ok(())
}

/// Checks that `ipam.routes`, if present, is a list of `{"dst": CIDR, "gw": IP}` objects,
/// the shape flannel decodes it into (a bad list fails there too).
fn validate_routes(routes: &Value) -> Result<&Vec<Value>, Error> {
    let bad = |why: String| {
        Error::InvalidConfig(format!(
            "failed to read IPAM routes: {why}; \"ipam\".\"routes\" must be a list like [{{\"dst\": \"192.168.0.0/16\", \"gw\": \"10.244.1.1\"}}] (\"gw\" is optional)"
        ))
    };
    let list = routes
        .as_array()
        .ok_or_else(|| bad(format!("found {routes}")))?;
    for (i, route) in list.iter().enumerate() {
        let obj = route
            .as_object()
            .ok_or_else(|| bad(format!("route {i} is {route}, not an object")))?;
        match obj.get("dst") {
            Some(Value::String(dst)) if dst.parse::<IpNet>().is_ok() => {}
            Some(dst) => return Err(bad(format!("route {i} has \"dst\" {dst}, not a CIDR"))),
            None => return Err(bad(format!("route {i} has no \"dst\""))),
        }
        match obj.get("gw") {
            None | Some(Value::Null) => {}
            Some(Value::String(gw)) if gw.parse::<std::net::IpAddr>().is_ok() => {}
            Some(gw) => return Err(bad(format!("route {i} has \"gw\" {gw}, not an IP address"))),
        }
    }
    Ok(list)
}

/// The delegate's `ipam`: the input `ipam` (or `{}`), `type` defaulting to host-local,
/// `ranges` overwritten with the node subnets, `routes` = input routes + cluster networks.
pub fn build_ipam(conf: &NetConf, env: &FlannelEnv) -> Result<Map<String, Value>, Error> {
    let mut ipam = conf.ipam.clone().unwrap_or_default();
    if !ipam.contains_key("type") {
        ipam.insert("type".into(), json!(DEFAULT_IPAM_TYPE));
    }
    let mut ranges = Vec::new();
    if let Some(sn) = env.subnet {
        ranges.push(json!([{ "subnet": sn.to_string() }]));
    }
    if let Some(sn) = env.ipv6_subnet {
        ranges.push(json!([{ "subnet": sn.to_string() }]));
    }
    ipam.insert("ranges".into(), Value::Array(ranges));

    let mut routes = match ipam.get("routes") {
        Some(r) => validate_routes(r)?.clone(),
        None => Vec::new(),
    };
    routes.extend(env.networks.iter().map(|n| json!({ "dst": n.to_string() })));
    routes.extend(
        env.ipv6_networks
            .iter()
            .map(|n| json!({ "dst": n.to_string() })),
    );
    ipam.insert("routes".into(), Value::Array(routes));
    Ok(ipam)
}

/// The complete delegate config for ADD.
pub fn build_delegate(conf: &NetConf, env: &FlannelEnv) -> Result<Map<String, Value>, Error> {
    validate_delegate(conf.delegate.as_ref())?;
    let mut d = conf.delegate.clone().unwrap_or_default();
    if let Some(rc) = &conf.runtime_config {
        d.insert("runtimeConfig".into(), Value::Object(rc.clone()));
    }
    d.insert("name".into(), json!(conf.name));
    if !d.contains_key("type") {
        d.insert("type".into(), json!(DEFAULT_DELEGATE_TYPE));
    }
    if !d.contains_key("ipMasq") {
        // flannel masquerades itself when FLANNEL_IPMASQ=true; then the bridge must not.
        d.insert("ipMasq".into(), json!(!env.ipmasq));
    }
    if !d.contains_key("mtu") {
        d.insert("mtu".into(), json!(env.mtu));
    }
    let bridge = d.get("type").and_then(Value::as_str) == Some("bridge");
    if bridge && !d.contains_key("isGateway") {
        d.insert("isGateway".into(), json!(true));
    }
    // flannel leaves bridge's `forceAddress` false, so once the node has moved to another
    // subnet, bridge refuses every pod ("cni0" already has an IP address different from ...)
    // until someone deletes cni0. weft-cni lets bridge put the new gateway in place of the
    // old one: pods of the old subnet lost their routes with the subnet (another node holds
    // it now, or no one does), and subnet.env is withdrawn while the node holds no subnet,
    // so the gateway given is always the node's own. A `forceAddress` in the config is kept.
    let gateway = [d.get("isGateway"), d.get("isDefaultGateway")].contains(&Some(&json!(true)));
    if bridge && gateway && !d.contains_key("forceAddress") {
        d.insert("forceAddress".into(), json!(true));
    }
    if !conf.cni_version.is_empty() {
        d.insert("cniVersion".into(), json!(conf.cni_version));
    }
    d.insert("ipam".into(), Value::Object(build_ipam(conf, env)?));
    Ok(d)
}

/// The delegate's plugin name (`type`); [`build_delegate`] guarantees a string.
pub fn delegate_type(delegate: &Map<String, Value>) -> &str {
    delegate
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_DELEGATE_TYPE)
}

/// The bytes handed to the delegate and saved for DEL: Go's `json.Marshal` of the map.
pub fn render(delegate: &Map<String, Value>) -> Vec<u8> {
    crate::json::render_value(&Value::Object(delegate.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube_flannel_conf() -> NetConf {
        NetConf::parse(
            br#"{"name":"cbr0","cniVersion":"0.3.1","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#,
        )
        .unwrap()
    }

    fn env_v4() -> FlannelEnv {
        FlannelEnv {
            networks: vec!["10.244.0.0/16".parse().unwrap()],
            subnet: Some("10.244.1.0/24".parse().unwrap()),
            ipv6_networks: vec![],
            ipv6_subnet: None,
            mtu: 1450,
            ipmasq: true,
        }
    }

    fn env_dual() -> FlannelEnv {
        FlannelEnv {
            ipv6_networks: vec!["fc00::/48".parse().unwrap()],
            ipv6_subnet: Some("fc00:0:0:1::/64".parse().unwrap()),
            ..env_v4()
        }
    }

    use crate::test_support::assert_golden as golden;

    #[test]
    fn kube_flannel_cbr0_matches_golden() {
        let d = build_delegate(&kube_flannel_conf(), &env_v4()).unwrap();
        golden("delegate-cbr0.json", &render(&d));
        // The same content as flannel's documented example, whatever the key order, plus
        // `forceAddress` (see build_delegate: a subnet move must not leave cni0 refusing pods).
        let want: Value = serde_json::from_str(r#"{"cniVersion":"0.3.1","forceAddress":true,"hairpinMode":true,"ipMasq":false,"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge","ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"}}"#).unwrap();
        assert_eq!(Value::Object(d), want);
    }

    #[test]
    fn dual_stack_with_ipam_base_matches_golden() {
        let conf = NetConf::parse(
            br#"{"name":"cbr0","cniVersion":"1.0.0","type":"flannel",
                 "ipam":{"dataDir":"/tmp/ipam","routes":[{"dst":"192.168.0.0/16","gw":"10.244.1.1"}],"ranges":[[{"subnet":"1.2.3.0/24"}]]},
                 "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},
                 "delegate":{"hairpinMode":true,"isDefaultGateway":true,"bridge":"cni0"}}"#,
        )
        .unwrap();
        let d = build_delegate(&conf, &env_dual()).unwrap();
        golden("delegate-dual-stack.json", &render(&d));
        assert_eq!(
            d["ipam"]["ranges"],
            json!([[{"subnet":"10.244.1.0/24"}],[{"subnet":"fc00:0:0:1::/64"}]])
        );
        assert_eq!(
            d["ipam"]["routes"],
            json!([{"dst":"192.168.0.0/16","gw":"10.244.1.1"},{"dst":"10.244.0.0/16"},{"dst":"fc00::/48"}])
        );
        assert_eq!(d["ipam"]["dataDir"], json!("/tmp/ipam"));
        assert_eq!(
            d["runtimeConfig"]["portMappings"][0]["hostPort"],
            json!(8080)
        );
        assert_eq!(d["bridge"], json!("cni0"));
    }

    #[test]
    fn ipv6_only() {
        let env = FlannelEnv {
            networks: vec![],
            subnet: None,
            ..env_dual()
        };
        let d = build_delegate(&kube_flannel_conf(), &env).unwrap();
        assert_eq!(d["ipam"]["ranges"], json!([[{"subnet":"fc00:0:0:1::/64"}]]));
        assert_eq!(d["ipam"]["routes"], json!([{"dst":"fc00::/48"}]));
    }

    #[test]
    fn defaults_without_delegate_object() {
        let conf = NetConf::parse(br#"{"name":"n"}"#).unwrap();
        let env = FlannelEnv {
            ipmasq: false,
            mtu: 1500,
            ..env_v4()
        };
        let d = build_delegate(&conf, &env).unwrap();
        assert_eq!(
            Value::Object(d),
            json!({"name":"n","type":"bridge","ipMasq":true,"mtu":1500,"isGateway":true,
                   "forceAddress":true,
                   "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}]}})
        );
    }

    #[test]
    fn explicit_delegate_values_win_over_defaults() {
        let conf = NetConf::parse(
            br#"{"name":"n","cniVersion":"0.4.0","delegate":{"type":"bridge","ipMasq":true,"mtu":1400,"isGateway":false,"cniVersion":"9.9.9"},"ipam":{"type":"static"}}"#,
        )
        .unwrap();
        let d = build_delegate(&conf, &env_v4()).unwrap();
        assert_eq!(d["ipMasq"], json!(true));
        assert_eq!(d["mtu"], json!(1400));
        assert_eq!(d["isGateway"], json!(false));
        // Top-level cniVersion wins when it is set.
        assert_eq!(d["cniVersion"], json!("0.4.0"));
        assert_eq!(d["ipam"]["type"], json!("static"));
    }

    #[test]
    fn delegate_cni_version_kept_when_top_level_is_empty() {
        let conf = NetConf::parse(br#"{"name":"n","delegate":{"cniVersion":"0.3.1"}}"#).unwrap();
        let d = build_delegate(&conf, &env_v4()).unwrap();
        assert_eq!(d["cniVersion"], json!("0.3.1"));
        let conf = NetConf::parse(br#"{"name":"n"}"#).unwrap();
        assert!(
            !build_delegate(&conf, &env_v4())
                .unwrap()
                .contains_key("cniVersion")
        );
    }

    #[test]
    fn is_gateway_only_for_bridge() {
        let conf = NetConf::parse(br#"{"name":"n","delegate":{"type":"ptp"}}"#).unwrap();
        let d = build_delegate(&conf, &env_v4()).unwrap();
        assert_eq!(d["type"], json!("ptp"));
        assert!(!d.contains_key("isGateway"));
        assert!(!d.contains_key("forceAddress"));
        assert_eq!(delegate_type(&d), "ptp");
    }

    #[test]
    fn a_gateway_bridge_may_replace_its_address_unless_the_config_says_otherwise() {
        let d = |delegate: &str| {
            let conf = format!(r#"{{"name":"n","delegate":{delegate}}}"#);
            build_delegate(&NetConf::parse(conf.as_bytes()).unwrap(), &env_v4()).unwrap()
        };
        assert_eq!(d(r#"{}"#)["forceAddress"], json!(true));
        assert_eq!(
            d(r#"{"isDefaultGateway":true}"#)["forceAddress"],
            json!(true)
        );
        assert_eq!(d(r#"{"forceAddress":false}"#)["forceAddress"], json!(false));
        // a bridge without a gateway address has nothing to replace
        assert!(!d(r#"{"isGateway":false}"#).contains_key("forceAddress"));
    }

    #[test]
    fn present_null_counts_as_set_like_flannel() {
        let conf =
            NetConf::parse(br#"{"name":"n","delegate":{"ipMasq":null,"mtu":null}}"#).unwrap();
        let d = build_delegate(&conf, &env_v4()).unwrap();
        assert_eq!(d["ipMasq"], Value::Null);
        assert_eq!(d["mtu"], Value::Null);
    }

    #[test]
    fn name_is_always_the_top_level_name() {
        let d = build_delegate(&kube_flannel_conf(), &env_v4()).unwrap();
        assert_eq!(d["name"], json!("cbr0"));
    }

    #[test]
    fn delegate_type_must_be_a_string() {
        for t in ["1", "null", "true", "[\"bridge\"]", "{}"] {
            let conf =
                NetConf::parse(format!(r#"{{"name":"n","delegate":{{"type":{t}}}}}"#).as_bytes())
                    .unwrap();
            let err = build_delegate(&conf, &env_v4()).unwrap_err();
            assert_eq!(err.code(), 7, "{t}");
            let msg = err.to_string();
            assert!(
                msg.contains("'delegate' dictionary, if present, must have (string) 'type' field"),
                "{msg}"
            );
            assert!(msg.contains("bridge is the default"), "{msg}");
        }
    }

    #[test]
    fn delegate_name_is_forbidden() {
        let conf = NetConf::parse(br#"{"name":"n","delegate":{"name":"x"}}"#).unwrap();
        let err = build_delegate(&conf, &env_v4()).unwrap_err();
        assert_eq!(err.code(), 7);
        let msg = err.to_string();
        assert!(
            msg.contains(
                "'delegate' dictionary must not have 'name' field, it'll be set by flannel"
            ),
            "{msg}"
        );
        assert!(msg.contains("remove \"name\""), "{msg}");
    }

    #[test]
    fn delegate_ipam_is_forbidden() {
        let conf =
            NetConf::parse(br#"{"name":"n","delegate":{"ipam":{"type":"host-local"}}}"#).unwrap();
        let err = build_delegate(&conf, &env_v4()).unwrap_err();
        assert_eq!(err.code(), 7);
        let msg = err.to_string();
        assert!(
            msg.contains(
                "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"
            ),
            "{msg}"
        );
        assert!(msg.contains("top-level \"ipam\""), "{msg}");
    }

    #[test]
    fn bad_ipam_routes_are_rejected() {
        for routes in [
            r#""10.0.0.0/8""#,
            r#"[1]"#,
            r#"[{"gw":"10.0.0.1"}]"#,
            r#"[{"dst":"nope"}]"#,
            r#"[{"dst":5}]"#,
            r#"[{"dst":"10.0.0.0/8","gw":"x"}]"#,
        ] {
            let conf = NetConf::parse(
                format!(r#"{{"name":"n","ipam":{{"routes":{routes}}}}}"#).as_bytes(),
            )
            .unwrap();
            let err = build_delegate(&conf, &env_v4()).unwrap_err();
            assert_eq!(err.code(), 7, "{routes}");
            assert!(
                err.to_string().contains("failed to read IPAM routes"),
                "{err}"
            );
        }
    }

    #[test]
    fn route_host_bits_and_extra_fields_are_kept() {
        let conf =
            NetConf::parse(br#"{"name":"n","ipam":{"routes":[{"dst":"10.1.2.3/8","mtu":1300}]}}"#)
                .unwrap();
        let d = build_delegate(&conf, &env_v4()).unwrap();
        assert_eq!(
            d["ipam"]["routes"],
            json!([{"dst":"10.1.2.3/8","mtu":1300},{"dst":"10.244.0.0/16"}])
        );
    }
}
