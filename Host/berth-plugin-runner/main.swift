// berth-plugin-runner — loads one plugin in its own process and serves the plugin ABI to berthd over the socket
// pair on fd 3 (site key "isolation": "process"). berthd starts it; it is not meant to be run by hand.
// It dies with the daemon (PR_SET_PDEATHSIG and EOF on fd 3), applies the memory and open-file limits it is
// given, loads the plugin with the daemon's own Loader and proxies the plugin's host services back to berthd.
// The protocol and both of its ends are in Host/BerthCore/Remote.swift.
import BerthPlugins
import BerthStore

PluginRunner.main(CommandLine.arguments)
