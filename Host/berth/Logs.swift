// berth logs [KIND/]APP/ORDINAL [--follow]: an instance's output, read from the node agent's runtime log
// (GET /v1/instances/{kind}/{app}/{ordinal}/logs); --follow polls for what is appended, across rotations.
import ArgumentParser
import BerthWire
import Foundation

struct LogsCmd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print an instance's output (APP/ORDINAL or KIND/APP/ORDINAL).")
    @OptionGroup var conn: Connection
    @Argument(help: "The instance: APP/ORDINAL (an App) or KIND/APP/ORDINAL (e.g. StatefulApp/db/1).") var instance: String
    @Flag(name: .shortAndLong, help: "Keep printing what the instance writes (Ctrl-C to stop).") var follow = false
    @Option(name: .long, help: "Bytes of the log's end to print first (default 65536).") var tail: Int = 65536

    func run() throws {
        let parts = instance.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (parts.count == 2 || parts.count == 3), !parts.contains(where: \.isEmpty) else {
            throw ValidationError("\(instance): expected APP/ORDINAL or KIND/APP/ORDINAL, e.g. web/0 or StatefulApp/db/1")
        }
        guard tail >= 1, tail <= 1 << 20 else { throw ValidationError("--tail must be from 1 to 1048576, got \(tail)") }
        let path = try Instances.path(parts.count == 2 ? "App/\(parts[0])/\(parts[1])" : instance, "logs")
        var j = try conn.call("GET", path + "?maxBytes=\(tail)")
        if conn.output != .table && !follow { emit(j, conn.output) {}; return }
        while true {
            FileHandle.standardOutput.write(Data((j["data"]?.string ?? "").utf8))
            guard follow else { return }
            let next = j["next"]?.int ?? 0
            if j["data"]?.string?.isEmpty ?? true { usleep(500_000) }
            j = try conn.call("GET", path + "?offset=\(next)&maxBytes=65536")
        }
    }
}

/// berth exec [KIND/]APP/ORDINAL -- CMD [ARGS...]: runs a command inside an instance and prints its output; exits
/// with the command's exit code.
struct ExecCmd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "exec", abstract: "Run a command inside an instance (APP/ORDINAL or KIND/APP/ORDINAL).")
    @OptionGroup var conn: Connection
    @Option(name: .long, help: "Seconds before the command is killed (default 30).") var timeout: Int = 30
    @Argument(help: "The instance: APP/ORDINAL or KIND/APP/ORDINAL.") var instance: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments (after --).") var command: [String] = []

    func run() throws {
        let parts = instance.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (parts.count == 2 || parts.count == 3), !parts.contains(where: \.isEmpty) else {
            throw ValidationError("\(instance): expected APP/ORDINAL or KIND/APP/ORDINAL, e.g. web/0 or StatefulApp/db/1")
        }
        let cmd = command.first == "--" ? Array(command.dropFirst()) : command
        guard let program = cmd.first else { throw ValidationError("give the command after --, e.g. berth exec web/0 -- cat /etc/hostname") }
        let path = try Instances.path(parts.count == 2 ? "App/\(parts[0])/\(parts[1])" : instance, "exec")
        let j = try conn.call("POST", path, body: ["command": .string(program), "args": .array(cmd.dropFirst().map { .string($0) }),
                                                   "timeoutSeconds": .number(Double(timeout))])
        if conn.output != .table { emit(j, conn.output) {}; return }
        FileHandle.standardOutput.write(Data((j["output"]?.string ?? "").utf8))
        if j["truncated"]?.bool == true { FileHandle.standardError.write(Data("(output truncated)\n".utf8)) }
        let code = j["exitCode"]?.int ?? 1
        if code != 0 { throw ExitCode(Int32(truncatingIfNeeded: code)) }
    }
}
