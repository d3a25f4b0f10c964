// The one error type of the host, keyed on berth_status (PluginABI/include/berth_plugin.h): what a plugin returns
// and what the host itself refuses are the same value. Mapped to HTTP in BerthServer alone, to CNI codes in the CNI
// adapter alone. The table below mirrors the header's enum; a test reads the header and compares them.

/// A berth_status value. Values a plugin may return that this host does not know (a newer minor) are kept as they
/// are and treated as INTERNAL, as the header asks.
public struct BerthStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let ok = BerthStatus(rawValue: 0)
    public static let invalidArgument = BerthStatus(rawValue: 3)
    public static let notFound = BerthStatus(rawValue: 5)
    public static let alreadyExists = BerthStatus(rawValue: 6)
    public static let resourceExhausted = BerthStatus(rawValue: 8)
    public static let failedPrecondition = BerthStatus(rawValue: 9)
    public static let aborted = BerthStatus(rawValue: 10)
    public static let outOfRange = BerthStatus(rawValue: 11)
    public static let unimplemented = BerthStatus(rawValue: 12)
    public static let `internal` = BerthStatus(rawValue: 13)
    public static let unavailable = BerthStatus(rawValue: 14)

    /// Every status the header defines, by its name without the BERTH_ prefix.
    public static let all: [(name: String, status: BerthStatus)] = [
        ("OK", .ok), ("INVALID_ARGUMENT", .invalidArgument), ("NOT_FOUND", .notFound), ("ALREADY_EXISTS", .alreadyExists),
        ("RESOURCE_EXHAUSTED", .resourceExhausted), ("FAILED_PRECONDITION", .failedPrecondition), ("ABORTED", .aborted),
        ("OUT_OF_RANGE", .outOfRange), ("UNIMPLEMENTED", .unimplemented), ("INTERNAL", .internal), ("UNAVAILABLE", .unavailable),
    ]

    /// The header's name ("NOT_FOUND"), or UNKNOWN(n).
    public var name: String { Self.all.first { $0.status == self }?.name ?? "UNKNOWN(\(rawValue))" }
    /// A known status, or INTERNAL for a value this host does not know.
    public var known: BerthStatus { Self.all.contains { $0.status == self } ? self : .internal }
    public var description: String { name }
}

/// A refused or failed operation: its status, a message that says what was wrong with which input and what to do,
/// optional structured details, and, when a plugin returned it, the plugin and the operation.
public struct BerthError: Error, CustomStringConvertible, Sendable {
    public let status: BerthStatus
    public let message: String
    public var details: JSON?
    /// The plugin instance and operation that returned this status (nil: the host refused).
    public let plugin: String?
    public let operation: String?

    public init(_ status: BerthStatus, _ message: String, details: JSON? = nil) {
        self.status = status
        self.message = message
        self.details = details
        plugin = nil
        operation = nil
    }

    /// What a plugin's call returned.
    public init(plugin: String, operation: String, status: BerthStatus, message: String) {
        self.status = status
        self.message = message
        self.plugin = plugin
        self.operation = operation
        details = ["plugin": .string(plugin), "status": .string(status.name), "message": .string(message)]
    }

    /// A refused name or id (Names.swift).
    public init(_ e: Names.Invalid) { self.init(.invalidArgument, e.message) }

    public var statusName: String { status.name }
    public var description: String {
        guard let plugin else { return message }
        return "plugin \"\(plugin)\" \(operation ?? "call"): \(status.name): \(message)"
    }
}
