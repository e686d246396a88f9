"""nftables rulesets: quarantine isolation and in-service allow-lists."""

from cranewatch.policy.check import check_ruleset, verify_ruleset
from cranewatch.policy.inservice import Communication, inservice_plan, inservice_ruleset
from cranewatch.policy.nft import Ruleset, render, table_name
from cranewatch.policy.quarantine import quarantine_plan, quarantine_ruleset

__all__ = [
    "Communication",
    "Ruleset",
    "check_ruleset",
    "inservice_plan",
    "inservice_ruleset",
    "quarantine_plan",
    "quarantine_ruleset",
    "render",
    "table_name",
    "verify_ruleset",
]
