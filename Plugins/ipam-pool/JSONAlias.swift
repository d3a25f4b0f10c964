// The plugin uses the kit's JSON value (PluginJSON) under a short local name.
import BerthPluginKit

typealias JV = PluginJSON
