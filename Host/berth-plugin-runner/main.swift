// berth-plugin-runner — loads one plugin in its own process and serves the plugin ABI to berthd over the socket
// pair on fd 3 (site key "isolation": "process"). berthd starts it; it is not meant to be run by hand.
// It dies with the daemon (PR_SET_PDEATHSIG and EOF on fd 3), applies the memory and open-file limits it is
// given, loads the plugin with the daemon's own Loader and proxies the plugin's host services back to berthd.
// This target is the runner's side of the protocol (PluginRunner.swift, Calls.swift, Services.swift); the frames
// and codec it shares with berthd, and berthd's side, are in Host/BerthPlugins/Isolation.
PluginRunner.main(CommandLine.arguments)
