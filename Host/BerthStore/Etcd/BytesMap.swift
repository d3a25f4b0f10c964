// A dictionary keyed by byte strings that hashes a key in one call. `[UInt8]`'s own Hashable feeds the hasher one
// byte at a time; on the etcd engine's hot paths (the local copy following every change of the site, and each
// transaction's read and write sets) that per-byte hashing was about a tenth of a loaded berthd's CPU.
#if canImport(Glibc)
import Glibc
#endif

/// A byte-string key: the bytes hashed as one block, compared with memcmp.
struct ByteKey: Hashable {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (a: ByteKey, b: ByteKey) -> Bool {
        a.bytes.count == b.bytes.count && a.bytes.withUnsafeBytes { pa in
            b.bytes.withUnsafeBytes { pb in pa.count == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0 }
        }
    }
}

/// `[[UInt8]: Value]` with ByteKey hashing: the same subscript, updates and iteration (in no particular order).
struct BytesMap<Value>: Sequence {
    private var storage: [ByteKey: Value] = [:]

    init() {}

    var count: Int { storage.count }
    var isEmpty: Bool { storage.isEmpty }
    var keys: LazyMapSequence<Dictionary<ByteKey, Value>.Keys, [UInt8]> { storage.keys.lazy.map(\.bytes) }

    subscript(key: [UInt8]) -> Value? {
        get { storage[ByteKey(key)] }
        set { storage[ByteKey(key)] = newValue }
    }

    @discardableResult
    mutating func updateValue(_ value: Value, forKey key: [UInt8]) -> Value? {
        storage.updateValue(value, forKey: ByteKey(key))
    }

    @discardableResult
    mutating func removeValue(forKey key: [UInt8]) -> Value? {
        storage.removeValue(forKey: ByteKey(key))
    }

    struct Iterator: IteratorProtocol {
        var base: Dictionary<ByteKey, Value>.Iterator
        mutating func next() -> (key: [UInt8], value: Value)? {
            guard let (k, v) = base.next() else { return nil }
            return (k.bytes, v)
        }
    }
    func makeIterator() -> Iterator { Iterator(base: storage.makeIterator()) }
    var underestimatedCount: Int { storage.count }
}
