//! flannel's nftables mode on the node: the `nft` binary, one atomic `nft -f` transaction per
//! change (the table is replaced whole, see [`weft_core::nft`]), and a drift check that
//! compares the kernel's listing with the one read right after weftd's own write. A
//! dual-stack node keeps both tables (`ip flannel-ipv4`, `ip6 flannel-ipv6`) with
//! [`Nftables::sync_dual`]: both replaced in one transaction.

use std::sync::Mutex;
use std::time::Duration;

use tracing::info;
use weft_core::nft::{self, DualNftRules, NftRules};

use crate::firewall::{FirewallError, Iptables};

const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nft` binary, and what weftd last wrote with it.
#[derive(Debug)]
pub struct Nftables {
    pub nft: String,
    /// The rules last written, and the kernel's listing of the table right after.
    written: Mutex<Option<(NftRules, String)>>,
    /// The same for [`Nftables::sync_dual`]: the rules, and the listings of the IPv4 and the
    /// IPv6 table right after (None: no such table).
    written_dual: Mutex<Option<DualWritten>>,
}

/// What [`Nftables::sync_dual`] last wrote and then read back.
type DualWritten = (DualNftRules, Option<String>, Option<String>);

impl Default for Nftables {
    fn default() -> Self {
        Nftables {
            nft: "nft".into(),
            written: Mutex::new(None),
            written_dual: Mutex::new(None),
        }
    }
}

impl Nftables {
    async fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
        Iptables::default()
            .run(&self.nft, args, stdin, NFT_TIMEOUT, None)
            .await
    }

    /// Runs `script` as one transaction (`nft -f -`): all of it or nothing.
    pub async fn apply(&self, script: &str) -> Result<(), FirewallError> {
        self.nft(&["-f", "-"], Some(script)).await.map(|_| ())
    }

    /// flannel's IPv4 table as the kernel lists it; None when there is none.
    pub async fn list(&self) -> Result<Option<String>, FirewallError> {
        self.list_table(nft::V4_TABLE).await
    }

    /// The table `table` (family and name, e.g. [`nft::V6_TABLE`]) as the kernel lists it;
    /// None when there is none.
    pub async fn list_table(&self, table: &str) -> Result<Option<String>, FirewallError> {
        let mut args = vec!["list", "table"];
        args.extend(table.split_whitespace());
        match self.nft(&args, None).await {
            Ok(text) => Ok(Some(text)),
            Err(FirewallError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this nft and kernel can `masquerade fully-random` (checked with `nft -c`,
    /// which commits nothing), as flannel checks it.
    pub async fn supports_fully_random(&self) -> bool {
        self.nft(&["-c", "-f", "-"], Some(&nft::fully_random_probe()))
            .await
            .is_ok()
    }

    /// Makes flannel's table hold exactly `rules`. It is rewritten (one transaction) when the
    /// rules changed, when the kernel's listing differs from the one read after the last
    /// write (someone changed or deleted the table), and on the first call; returns whether it
    /// was.
    pub async fn sync(&self, rules: &NftRules) -> Result<bool, FirewallError> {
        let now = self.list().await?.map(|l| nft::normalize(&l));
        let unchanged = {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            matches!((&*written, &now), (Some((r, listing)), Some(l)) if r == rules && listing == l)
        };
        if unchanged {
            return Ok(false);
        }
        info!(table = nft::V4_TABLE, "programming weft's nftables table");
        self.apply(&nft::transaction(rules)).await?;
        let listing = self
            .list()
            .await?
            .map(|l| nft::normalize(&l))
            .unwrap_or_default();
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = Some((*rules, listing));
        Ok(true)
    }

    /// Both tables as the kernel lists them (normalized), read at once.
    async fn list_both(&self) -> Result<(Option<String>, Option<String>), FirewallError> {
        let (v4, v6) = tokio::join!(
            self.list_table(nft::V4_TABLE),
            self.list_table(nft::V6_TABLE)
        );
        let norm = |l: Option<String>| l.map(|l| nft::normalize(&l));
        Ok((norm(v4?), norm(v6?)))
    }

    /// Makes both of flannel's tables what `rules` says (a family that is None has its table
    /// removed), in one transaction ([`nft::dual_transaction`]): on the first call, when the
    /// rules changed, and when the kernel's listing of either table differs from the one read
    /// after the last write. Returns whether it wrote.
    pub async fn sync_dual(&self, rules: &DualNftRules) -> Result<bool, FirewallError> {
        let (v4, v6) = self.list_both().await?;
        let unchanged = {
            let written = self.written_dual.lock().unwrap_or_else(|p| p.into_inner());
            matches!(&*written, Some((r, l4, l6)) if r == rules && *l4 == v4 && *l6 == v6)
        };
        if unchanged {
            return Ok(false);
        }
        info!(
            ipv4 = rules.v4.is_some(),
            ipv6 = rules.v6.is_some(),
            "programming weft's nftables tables {} and {}",
            nft::V4_TABLE,
            nft::V6_TABLE
        );
        self.apply(&nft::dual_transaction(rules)).await?;
        let (v4, v6) = self.list_both().await?;
        *self.written_dual.lock().unwrap_or_else(|p| p.into_inner()) = Some((*rules, v4, v6));
        Ok(true)
    }

    /// Removes both of flannel's tables, those there are, in one transaction (the iptables
    /// mode's clean-up of the other mode on a dual-stack node); the tables it removed.
    pub async fn remove_both(&self) -> Result<Vec<&'static str>, FirewallError> {
        let (v4, v6) = self.list_both().await?;
        let had: Vec<&'static str> = [(nft::V4_TABLE, v4), (nft::V6_TABLE, v6)]
            .into_iter()
            .filter_map(|(name, listing)| listing.map(|_| name))
            .collect();
        if !had.is_empty() {
            self.apply(&nft::removal_both()).await?;
        }
        Ok(had)
    }

    /// Removes flannel's IPv4 table if there is one (the iptables mode's clean-up of the other
    /// mode); whether there was one.
    pub async fn remove(&self) -> Result<bool, FirewallError> {
        let had = self.list().await?.is_some();
        if had {
            self.apply(&nft::removal()).await?;
        }
        Ok(had)
    }
}
