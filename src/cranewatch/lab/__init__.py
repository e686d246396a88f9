"""The reference crane STS-07 in Linux network namespaces, with real protocol stacks."""
