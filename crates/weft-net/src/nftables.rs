//! flannel's nftables mode on the node: the `nft` binary, one atomic `nft -f` transaction per
//! change (the table is replaced whole, see [`weft_core::nft`]), and a drift check that
//! compares the kernel's listing with the one read right after weftd's own write.

use std::sync::Mutex;
use std::time::Duration;

use tracing::info;
use weft_core::nft::{self, NftRules};

use crate::firewall::{FirewallError, Iptables};

const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nft` binary, and what weftd last wrote with it.
#[derive(Debug)]
pub struct Nftables {
    pub nft: String,
    /// The rules last written, and the kernel's listing of the table right after.
    written: Mutex<Option<(NftRules, String)>>,
}

impl Default for Nftables {
    fn default() -> Self {
        Nftables {
            nft: "nft".into(),
            written: Mutex::new(None),
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

    /// flannel's table as the kernel lists it; None when there is none.
    pub async fn list(&self) -> Result<Option<String>, FirewallError> {
        match self
            .nft(&["list", "table", "ip", "flannel-ipv4"], None)
            .await
        {
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

    /// Removes flannel's table if there is one (the iptables mode's clean-up of the other
    /// mode); whether there was one.
    pub async fn remove(&self) -> Result<bool, FirewallError> {
        let had = self.list().await?.is_some();
        if had {
            self.apply(&nft::removal()).await?;
        }
        Ok(had)
    }
}
