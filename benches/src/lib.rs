//! Workloads shared by the benchmarks: the same realistic rule set written as a broker policy and
//! as Cedar policies, and a deterministic mix of requests against it.

use permission_broker_policy::Permission;

/// A rule set of `n` rules in both languages, and requests that hit and miss it.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub toml: String,
    pub cedar: String,
    pub requests: Vec<(Permission, String)>,
}

/// A small deterministic generator (no `rand`: the same sequence on every machine and run).
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

/// `n` rules in the proportions of a fleet policy: six in ten scope application directories
/// (every fifth of those with a deny for its secrets), two in ten allow a service endpoint, two in
/// ten allow environment variables (half of them by prefix).
pub fn realistic(n: usize) -> RuleSet {
    realistic_with(n, n)
}

/// As [`realistic`], with requests about only `targets` distinct rule targets (spread over the
/// whole rule set): what one process asking about its own few paths looks like.
pub fn realistic_with(n: usize, targets: usize) -> RuleSet {
    let mut toml = String::from("version = 1\n[defaults]\nsymlinks = \"lexical\"\n");
    let mut cedar = String::new();
    for i in 0..n {
        match i % 10 {
            0..=5 if i % 50 == 0 => {
                toml += &format!(
                    "[[rule]]\nid = \"r{i}\"\neffect = \"deny\"\npermissions = [\"read\", \"write\"]\npaths = [\"/srv/app{i}/secrets\"]\nreason = \"secrets\"\n"
                );
                cedar += &format!(
                    "forbid(principal, action in [Action::\"read\", Action::\"write\"], resource) when {{ context.value == \"/srv/app{i}/secrets\" || context.value like \"/srv/app{i}/secrets/*\" }};\n"
                );
            }
            0..=5 => {
                toml += &format!(
                    "[[rule]]\nid = \"r{i}\"\neffect = \"allow\"\npermissions = [\"read\", \"write\"]\npaths = [\"/srv/app{i}\"]\n"
                );
                cedar += &format!(
                    "permit(principal, action in [Action::\"read\", Action::\"write\"], resource) when {{ context.value == \"/srv/app{i}\" || context.value like \"/srv/app{i}/*\" }};\n"
                );
            }
            6 | 7 => {
                toml += &format!(
                    "[[rule]]\nid = \"r{i}\"\neffect = \"allow\"\npermissions = [\"net\"]\nhosts = [\"svc{i}.example.com:443\"]\n"
                );
                cedar += &format!(
                    "permit(principal, action == Action::\"net\", resource) when {{ context.value == \"svc{i}.example.com:443\" }};\n"
                );
            }
            8 => {
                toml += &format!(
                    "[[rule]]\nid = \"r{i}\"\neffect = \"allow\"\npermissions = [\"env\"]\nnames = [\"VAR_{i}\"]\n"
                );
                cedar += &format!(
                    "permit(principal, action == Action::\"env\", resource) when {{ context.value == \"VAR_{i}\" }};\n"
                );
            }
            _ => {
                toml += &format!(
                    "[[rule]]\nid = \"r{i}\"\neffect = \"allow\"\npermissions = [\"env\"]\nnames = [\"PFX{i}_*\"]\n"
                );
                cedar += &format!(
                    "permit(principal, action == Action::\"env\", resource) when {{ context.value like \"PFX{i}_*\" }};\n"
                );
            }
        }
    }
    let mut rng = Lcg::new(42);
    let mut requests = Vec::with_capacity(1024);
    let stride = (n / targets.max(1)).max(1);
    for _ in 0..1024 {
        let k = (rng.below(targets) * stride) % n.max(1);
        requests.push(match rng.below(8) {
            0..=2 => (
                Permission::Read,
                format!("/srv/app{k}/data/file{}.json", rng.below(100)),
            ),
            3 => (Permission::Write, format!("/srv/app{k}/secrets/key.pem")),
            4 => (Permission::Read, "/etc/passwd".to_owned()),
            5 => (Permission::Net, format!("svc{k}.example.com:443")),
            6 => (Permission::Env, format!("VAR_{k}")),
            _ => (Permission::Env, format!("PFX{k}_TOKEN")),
        });
    }
    RuleSet {
        toml,
        cedar,
        requests,
    }
}
