"""nftables rulesets: quarantine isolation and in-service allow-lists."""
