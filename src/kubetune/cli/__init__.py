"""The `kubetune` command line: one module per verb family, each parsing its arguments, calling the launcher and printing what it returns."""
