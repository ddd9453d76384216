"""The `avfusion` command line: one thin module per subcommand, each calling one library function."""
