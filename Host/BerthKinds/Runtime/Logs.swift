// `berth logs`: chunks of an instance's output from the runtime plugin's log file (rotated by the plugin: when the
// file is shorter than the reader's offset it was rotated, and reading starts again at its beginning).
import BerthWire
import Foundation

extension NodeAgent {
    public static let maxLogChunk = 1 << 20

    /// Up to `maxBytes` of the log of the instance `containerID` from `offset` (nil: the last `maxBytes`).
    public func logs(containerID: String, subject: String, offset: Int64?, maxBytes: Int) throws -> JSON {
        guard maxBytes >= 1, maxBytes <= Self.maxLogChunk else {
            throw BerthError(.invalidArgument, "maxBytes must be from 1 to \(Self.maxLogChunk), got \(maxBytes)")
        }
        guard let path = lock.withLock({ statuses[containerID]?.logPath }) else {
            throw BerthError(.notFound, "instance \(subject) has no log on this node: the node agent has not started it here (yet)")
        }
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw BerthError(.notFound, "the log of \(subject) (\(path)) cannot be opened: the instance was removed")
        }
        defer { try? fh.close() }
        let size = Int64((try? fh.seekToEnd()) ?? 0)
        var from = offset ?? max(0, size - Int64(maxBytes))
        let rotated = from > size
        if rotated { from = 0 }
        try fh.seek(toOffset: UInt64(from))
        let data = (try fh.read(upToCount: maxBytes)) ?? Data()
        return ["containerID": .string(containerID), "path": .string(path), "offset": .number(Double(from)),
                "next": .number(Double(from + Int64(data.count))), "rotated": .bool(rotated), "data": .string(String(decoding: data, as: UTF8.self))]
    }
}
