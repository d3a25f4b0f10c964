// What an instance runs: `spec.run` of App and StatefulApp (issue 19), parsed with the rest of the spec and checked
// against the node at apply, so a bad run spec is a 400 naming the field. Apps without `run` are placed as before.
import BerthKinds
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

struct RunSpec: Equatable {
    enum RestartPolicy: String { case always, onFailure = "on-failure", never }
    var rootfs: String
    var command: String
    var args: [String] = []
    /// In the order given; names are checked (no `=`, not BERTH_*: the identity variables are the host's).
    var env: [String] = []
    var envValues: [String] = []
    var workingDir: String?
    var restartPolicy: RestartPolicy = .always
    var graceSeconds = 10
    var health: HealthCheck?

    /// The `run` property of the shared schema (WorkloadSpec.commonProperties).
    static let schemaProperty: String = #"""
    "run": {"type": "object", "additionalProperties": false, "required": ["rootfs", "command"], "description": "What each instance runs on its node (the runtime plugin starts it); without it instances are only placed.", "properties": {
        "rootfs": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "absolute path on the node of a root filesystem directory or tarball (.tar, .tar.gz, .tgz)"},
        "command": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "the program inside the rootfs"},
        "args": {"type": "array", "maxItems": 256, "items": {"type": "string"}},
        "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "extra environment; BERTH_APP, BERTH_ORDINAL, BERTH_IP and BERTH_NODE are set by the host"},
        "workingDir": {"type": "string", "minLength": 1, "maxLength": 1024},
        "restartPolicy": {"enum": ["always", "on-failure", "never"], "description": "default always"},
        "graceSeconds": {"type": "integer", "minimum": 0, "maximum": 86400, "description": "SIGTERM to SIGKILL on stop (default 10)"},
    """# + HealthCheck.schemaProperty + "}}"

    /// The structural part (what the schema cannot say); nil without `run`. Does not look at the node: a spec read
    /// back from the store must load even if its rootfs has gone since (`checkOnNode` runs at apply).
    static func parse(_ v: JSON?) throws -> RunSpec? {
        guard let v, !v.isNull else { return nil }
        func bad(_ field: String, _ why: String) -> BerthError { BerthError(.invalidArgument, "spec.run.\(field): \(why)") }
        guard let rootfs = v["rootfs"]?.string, rootfs.hasPrefix("/") else {
            throw bad("rootfs", "must be an absolute path on the node (a root filesystem directory or tarball), got \(v["rootfs"]?.serialized ?? "nothing")")
        }
        guard let command = v["command"]?.string, !command.isEmpty else { throw bad("command", "is required (the program inside the rootfs)") }
        var r = RunSpec(rootfs: rootfs, command: command)
        r.args = (v["args"]?.array ?? []).compactMap { $0.string }
        for (k, value) in v["env"]?.object ?? [] {
            guard !k.isEmpty, !k.contains("="), !k.utf8.contains(0) else { throw bad("env", "\"\(k)\" is not a variable name") }
            if k.hasPrefix("BERTH_") { throw bad("env.\(k)", "BERTH_* variables are set by the host (the instance's identity); use another name") }
            r.env.append(k)
            r.envValues.append(value.string ?? "")
        }
        if let w = v["workingDir"]?.string {
            guard w.hasPrefix("/") else { throw bad("workingDir", "must be an absolute path inside the instance, got \"\(w)\"") }
            r.workingDir = w
        }
        if let p = v["restartPolicy"]?.string {
            guard let policy = RestartPolicy(rawValue: p) else { throw bad("restartPolicy", "\"\(p)\" is not always, on-failure or never") }
            r.restartPolicy = policy
        }
        if let g = v["graceSeconds"] {
            guard let s = g.int, s >= 0, s <= 86400 else { throw bad("graceSeconds", "\(g.serialized) must be an integer from 0 to 86400") }
            r.graceSeconds = s
        }
        r.health = try HealthCheck.parse(v["health"])
        return r
    }

    /// At apply: the rootfs exists on this node (a directory, or a tarball file), and an absolute command exists in a
    /// directory rootfs. What only the runtime can tell (a tarball's content) shows later as the instance's reason.
    func checkOnNode() throws {
        var st = stat()
        guard stat(rootfs, &st) == 0 else {
            throw BerthError(.invalidArgument, "spec.run.rootfs: \(rootfs) does not exist on this node (\(String(cString: strerror(errno)))); give a root filesystem directory or tarball")
        }
        let kind = st.st_mode & S_IFMT
        if kind == S_IFREG {
            guard [".tar", ".tar.gz", ".tgz"].contains(where: { rootfs.hasSuffix($0) }) else {
                throw BerthError(.invalidArgument, "spec.run.rootfs: \(rootfs) is a file but not a tarball (.tar, .tar.gz, .tgz)")
            }
            return
        }
        guard kind == S_IFDIR else { throw BerthError(.invalidArgument, "spec.run.rootfs: \(rootfs) is neither a directory nor a tarball") }
        if command.hasPrefix("/") {
            var cst = stat()
            // lstat: busybox's applets are absolute symlinks that resolve only inside the rootfs.
            guard lstat(rootfs + command, &cst) == 0 else {
                throw BerthError(.invalidArgument, "spec.run.command: \(command) does not exist in the rootfs \(rootfs)")
            }
        }
    }
}
