// berth nodes | apply | get | delete | instances — workloads through berthd's API.
import ArgumentParser
import BerthWire
import Foundation

/// "kind/app/ordinal" for table cells.
private func cpuText(_ j: JSON?) -> String {
    guard let m = j?.int else { return str(j) }
    return m % 1000 == 0 ? "\(m / 1000)" : "\(m)m"
}

private func bytesText(_ j: JSON?) -> String {
    guard let b = j?.int else { return str(j) }
    for (u, f) in [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] where b >= f && b % f == 0 { return "\(b / f)\(u)" }
    return "\(b)"
}

private func labelsText(_ j: JSON?) -> String {
    let kv = j?.object ?? []
    return kv.isEmpty ? "-" : kv.map { "\($0.0)=\(str($0.1))" }.joined(separator: ",")
}

private func instanceRows(_ list: [JSON]) -> [[String]] {
    list.map { i in
        [str(i["kind"]), str(i["name"]), str(i["state"]), str(i["node"]).isEmpty ? "-" : str(i["node"]),
         (i["ips"]?.array ?? []).isEmpty ? "-" : str(i["ips"]), str(i["incarnation"]),
         // The node agent's view (docs/apps.md, Running instances): phase, restarts, last exit code.
         i["runtime"].map { str($0["phase"]) } ?? "-", i["runtime"].map { str($0["restarts"]) } ?? "-",
         str(i["runtime"]?["lastExitCode"]), (i["reason"]?.string ?? "").isEmpty ? str(i["runtime"]?["reason"]) : str(i["reason"])]
    }
}

private let instanceHeader = ["KIND", "NAME", "STATE", "NODE", "IPS", "INC", "RUNTIME", "RESTARTS", "EXIT", "REASON"]

// MARK: nodes

struct Nodes: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register nodes and change their state.",
        subcommands: [Add.self, List.self, Drain.self, Down.self, Up.self, Remove.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add (or update) a node with its capacity and labels.")
        @OptionGroup var conn: Connection
        @Argument(help: "Node name") var name: String
        @Option(name: .long, help: "CPU: cores (\"4\", \"0.5\") or millicores (\"4000m\").") var cpu: String = "0"
        @Option(name: .long, help: "Memory: bytes or \"16Gi\".") var memory: String = "0"
        @Option(name: .long, help: "Disk: bytes or \"100Gi\".") var disk: String = "0"
        @Option(name: .long, help: "Host ports instances may use on the node.") var ports: Int = 1000
        @Option(name: .long, help: "A label KEY=VALUE (repeatable), e.g. --label zone=z1.") var label: [String] = []
        func run() throws {
            var labels: [(String, JSON)] = []
            for l in label {
                guard let eq = l.firstIndex(of: "=") else { throw ValidationError("--label \(l): expected KEY=VALUE") }
                labels.append((String(l[..<eq]), .string(String(l[l.index(after: eq)...]))))
            }
            let body: JSON = ["capacity": ["cpu": .string(cpu), "memory": .string(memory), "disk": .string(disk), "ports": .number(Double(ports))],
                              "labels": .object(labels)]
            let j = try conn.call("PUT", api("v1", "nodes", name), body: body)
            emit(j, conn.output) { print("node \(name) registered: cpu \(cpuText(j["capacity"]?["cpu"])), memory \(bytesText(j["capacity"]?["memory"])), labels \(labelsText(j["labels"]))") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List nodes with capacity, allocation and labels.")
        @OptionGroup var conn: Connection
        func run() throws {
            let j = try conn.call("GET", api("v1", "nodes"))
            emit(j, conn.output) {
                table(["NAME", "STATE", "CPU", "MEMORY", "DISK", "INSTANCES", "LABELS"], (j["nodes"]?.array ?? []).map { n in
                    [str(n["name"]), str(n["state"]),
                     "\(cpuText(n["allocated"]?["cpu"]))/\(cpuText(n["capacity"]?["cpu"]))",
                     "\(bytesText(n["allocated"]?["memory"]))/\(bytesText(n["capacity"]?["memory"]))",
                     "\(bytesText(n["allocated"]?["disk"]))/\(bytesText(n["capacity"]?["disk"]))",
                     str(n["allocated"]?["instances"]), labelsText(n["labels"])]
                })
            }
        }
    }

    struct Drain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop placing on a node and move its instances elsewhere.")
        @OptionGroup var conn: Connection
        @Argument(help: "Node name") var name: String
        func run() throws { try setState(conn, name, "drain") }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mark a node lost: its instances are rescheduled by their kind's rules.")
        @OptionGroup var conn: Connection
        @Argument(help: "Node name") var name: String
        func run() throws { try setState(conn, name, "down") }
    }

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mark a node up again.")
        @OptionGroup var conn: Connection
        @Argument(help: "Node name") var name: String
        func run() throws { try setState(conn, name, "up") }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a node that runs nothing.")
        @OptionGroup var conn: Connection
        @Argument(help: "Node name") var name: String
        func run() throws {
            let j = try conn.call("DELETE", api("v1", "nodes", name))
            emit(j, conn.output) { print("node \(name) removed") }
        }
    }

    static func setState(_ conn: Connection, _ name: String, _ verb: String) throws {
        let j = try conn.call("POST", api("v1", "nodes", name, verb))
        emit(j, conn.output) {
            let n = j["evicted"]?.int ?? 0
            print("node \(name) is \(str(j["state"]))" + (n > 0 ? "; \(n) instance(s) are being rescheduled" : ""))
        }
    }
}

// MARK: apply, get, delete

struct ApplyCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Create or update objects from a JSON file (- for stdin).",
        discussion: """
        The file holds one object, an array of objects, or {"items": [...]}. An object is {"kind", "name", "spec"} \
        for apps of any kind (App, or a kind a scheduler plugin declares), or {"kind": "Node", "name", "capacity", \
        "labels"} for nodes. Objects are applied in order; the first error stops.
        """)
    @OptionGroup var conn: Connection
    @Option(name: .customShort("f"), help: "The file (JSON).") var file: String
    func run() throws {
        let doc = try readJSONFile(file)
        let items = doc["items"]?.array ?? doc.array ?? [doc]
        var results: [JSON] = []
        for (i, item) in items.enumerated() {
            guard let kind = item["kind"]?.string, let name = item["name"]?.string else {
                throw CLIError("\(file): item \(i): \"kind\" and \"name\" are required")
            }
            let path = kind == "Node" ? api("v1", "nodes", name) : api("v1", "kinds", kind, name)
            let body = kind == "Node" ? item.removing("kind") : item
            let j = try conn.call("PUT", path, body: body)
            results.append(j)
            if conn.output == .table { print("\(kind.lowercased())/\(name) applied") }
        }
        if conn.output != .table { emit(.array(results), conn.output) {} }
    }
}

struct GetCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Show objects of a kind (App, StatefulApp, ...), or one of them; `berth get kinds` lists the kinds.")
    @OptionGroup var conn: Connection
    @Argument(help: "A kind, or \"kinds\", or \"nodes\".") var kind: String
    @Argument(help: "An object's name.") var name: String?
    func run() throws {
        switch (kind, name) {
        case ("kinds", _):
            let j = try conn.call("GET", api("v1", "kinds"))
            emit(j, conn.output) { table(["KIND", "OWNER"], (j["kinds"]?.array ?? []).map { [str($0["kind"]), str($0["owner"])] }) }
        case ("nodes", nil), ("Node", nil):
            try Nodes.List.parse(conn.arguments).run()
        case ("nodes", let n?), ("Node", let n?):
            let j = try conn.call("GET", api("v1", "nodes", n))
            emit(j, conn.output) { printFields(j) }
        case (_, nil):
            let j = try conn.call("GET", api("v1", "kinds", kind))
            emit(j, conn.output) {
                table(["NAME", "REPLICAS", "PENDING", "PLACED", "RUNNING", "TERMINATING", "GENERATION", "OWNER"], (j["items"]?.array ?? []).map { o in
                    [str(o["name"]), str(o["status"]?["replicas"]), str(o["status"]?["pending"]), str(o["status"]?["placed"]),
                     str(o["status"]?["running"]), str(o["status"]?["terminating"]), str(o["generation"]), str(o["owner"])]
                })
            }
        case (_, let n?):
            let j = try conn.call("GET", api("v1", "kinds", kind, n))
            if conn.output != .table { emit(j, conn.output) {}; return }
            printFields(j.removing("status"))
            let inst = try conn.call("GET", api("v1", "instances", query: [("kind", kind), ("app", n)]))
            print("")
            table(instanceHeader, instanceRows(inst["instances"]?.array ?? []))
        }
    }
}

struct DeleteCmd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete an object; its instances terminate.")
    @OptionGroup var conn: Connection
    @Argument(help: "The kind (App, StatefulApp, ...) or Node.") var kind: String
    @Argument(help: "The object's name.") var name: String
    func run() throws {
        if kind == "Node" || kind == "nodes" {
            let j = try conn.call("DELETE", api("v1", "nodes", name))
            emit(j, conn.output) { print("node \(name) removed") }
            return
        }
        let j = try conn.call("DELETE", api("v1", "kinds", kind, name))
        emit(j, conn.output) { print("\(kind.lowercased())/\(name) deleted; \(str(j["terminating"])) instance(s) terminating") }
    }
}

// MARK: instances

struct Instances: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List instances; show one; report one running; delete one (it comes back while its app wants it).",
        subcommands: [List.self, Show.self, Running.self, Delete.self], defaultSubcommand: List.self)

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List instances (filters: --kind, --app, --node, --state).")
        @OptionGroup var conn: Connection
        @Option(name: .long, help: "Only instances of this kind (App, StatefulApp, ...).") var kind: String?
        @Option(name: .long, help: "Only instances of this app.") var app: String?
        @Option(name: .long, help: "Only instances placed on this node.") var node: String?
        @Option(name: .long, help: "pending, placed, running or terminating") var state: String?
        func run() throws {
            let j = try conn.call("GET", api("v1", "instances", query: [("kind", kind), ("app", app), ("node", node), ("state", state)]))
            emit(j, conn.output) { table(instanceHeader, instanceRows(j["instances"]?.array ?? [])) }
        }
    }

    /// The API path of an instance named KIND/APP/ORDINAL, with `action` after it.
    static func path(_ s: String, _ action: String? = nil) throws -> String {
        let p = s.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard p.count == 3, !p.contains(where: \.isEmpty) else { throw ValidationError("\(s): expected KIND/APP/ORDINAL, e.g. StatefulApp/db/1") }
        return action.map { api("v1", "instances", p[0], p[1], p[2], $0) } ?? api("v1", "instances", p[0], p[1], p[2])
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one instance (KIND/APP/ORDINAL): state, node, addresses, volumes, why it is pending.")
        @OptionGroup var conn: Connection
        @Argument(help: "The instance, KIND/APP/ORDINAL (e.g. StatefulApp/db/1).") var instance: String
        func run() throws {
            let j = try conn.call("GET", try Instances.path(instance))
            emit(j, conn.output) { printFields(j) }
        }
    }

    struct Running: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Report a placed instance running (KIND/APP/ORDINAL).")
        @OptionGroup var conn: Connection
        @Argument(help: "The instance, KIND/APP/ORDINAL (e.g. StatefulApp/db/1).") var instance: String
        func run() throws {
            let j = try conn.call("POST", try Instances.path(instance, "running"))
            emit(j, conn.output) { print("\(instance) is \(str(j["state"])) on \(str(j["node"]))") }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an instance (KIND/APP/ORDINAL); it is placed again while its app wants it.")
        @OptionGroup var conn: Connection
        @Argument(help: "The instance, KIND/APP/ORDINAL (e.g. StatefulApp/db/1).") var instance: String
        func run() throws {
            let j = try conn.call("DELETE", try Instances.path(instance))
            emit(j, conn.output) { print("\(instance) is \(str(j["state"]))") }
        }
    }
}
