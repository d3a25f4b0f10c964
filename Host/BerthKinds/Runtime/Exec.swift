// `berth exec`: a command run inside an instance the node agent runs, through the runtime plugin's exec. The agent
// never runs two operations on one instance at once (the runtime kind's promise): exec and convergence share a
// per-instance claim; a convergence skips an instance an exec holds and comes back to it.
import BerthPlugins
import BerthWire
import Foundation

extension NodeAgent {
    /// Claims `id` for one operation; false when another holds it.
    func claim(_ id: String) -> Bool { busy.withLock { $0.insert(id).inserted } }
    func release(_ id: String) { _ = busy.withLock { $0.remove(id) } }

    /// Runs `command` inside the instance `containerID` (on a thread of its own: a plugin call may take the timeout).
    public func exec(containerID: String, subject: String, command: String, args: [String], timeoutSeconds: Int) async throws -> JSON {
        guard timeoutSeconds >= 1, timeoutSeconds <= 3600 else {
            throw BerthError(.invalidArgument, "timeoutSeconds must be from 1 to 3600, got \(timeoutSeconds)")
        }
        guard !command.isEmpty else { throw BerthError(.invalidArgument, "command is required (the program to run inside the instance)") }
        guard let rt = runtime() else { throw BerthError(.failedPrecondition, "no runtime plugin is loaded on this node (site key agent.runtime)") }
        guard rt.executes else { throw BerthError(.unimplemented, "runtime plugin \(rt.name) offers no exec") }
        guard lock.withLock({ statuses[containerID] }) != nil else {
            throw BerthError(.notFound, "instance \(subject) does not run on this node: nothing to exec in")
        }
        guard claim(containerID) else { throw BerthError(.aborted, "instance \(subject) is busy (being started, stopped or exec'd in); try again") }
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<JSON, Error>) in
            Detached.run { [self] in
                defer { release(containerID) }
                do {
                    let r = try rt.exec(containerID, command: command, args: args, timeoutSeconds: timeoutSeconds)
                    cont.resume(returning: ["exitCode": .number(Double(r.exitCode)), "output": .string(r.output), "truncated": .bool(r.truncated)])
                } catch { cont.resume(throwing: error) }
            }
        }
    }
}
