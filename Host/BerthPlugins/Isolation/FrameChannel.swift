// One end of the runner's socket pair, used by both sides: whole frames out under a lock, whole frames in with an
// optional deadline (a short spin before blocking, for the microsecond round trips of the call path).
import BerthPluginABI
import BerthStore

#if canImport(Glibc)
import Glibc
#endif

/// One end of the socket pair: whole frames out (under a lock: a runner's background threads may log), whole
/// frames in (one reader), with an optional deadline.
package final class FrameChannel: @unchecked Sendable {
    /// How long a reader polls without blocking before it sleeps in the kernel.
    static let spinNanos: UInt64 = 50_000
    package let fd: Int32
    private var buf: UnsafeMutableRawPointer
    private var cap = 1 << 16
    private var start = 0
    private var end = 0
    private var writeLock = pthread_mutex_t()
    package private(set) var closed = false

    package enum Received {
        case frame(FrameType, [UInt8])
        case timeout
        /// EOF (nil) or a read/protocol error.
        case closed(String?)
    }

    package init(fd: Int32) {
        self.fd = fd
        buf = malloc(cap)!
        pthread_mutex_init(&writeLock, nil)
        // Larger socket buffers mean fewer context switches for big frames (node batches, large JSON). Beyond
        // net.core.wmem_max only with CAP_NET_ADMIN (SO_SNDBUFFORCE); either way best effort.
        var size: Int32 = 1 << 20
        let len = socklen_t(MemoryLayout<Int32>.size)
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, len) != 0 { _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, len) }
    }

    deinit {
        close()
        free(buf)
    }

    package func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// Sends one frame. False when the peer is gone (never raises SIGPIPE).
    @discardableResult
    package func send(_ frame: [UInt8]) -> Bool {
        pthread_mutex_lock(&writeLock)
        defer { pthread_mutex_unlock(&writeLock) }
        var off = 0
        return frame.withUnsafeBytes { p in
            while off < p.count {
                let n = Glibc.send(fd, p.baseAddress! + off, p.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                off += n
            }
            return true
        }
    }

    /// The next frame; waits until `deadline` (monotonic nanoseconds), or forever when nil.
    package func receive(deadline: UInt64?) -> Received {
        while true {
            let have = end - start
            var need = 5
            if have >= 5 {
                let len = Int(UInt32(littleEndian: (buf + start).loadUnaligned(as: UInt32.self)))
                if len > maxFrameBytes { return .closed("frame of \(len) bytes is larger than the limit of \(maxFrameBytes)") }
                if have >= 5 + len {
                    let raw = (buf + start + 4).load(as: UInt8.self)
                    let payload = [UInt8](UnsafeRawBufferPointer(start: buf + start + 5, count: len))
                    start += 5 + len
                    if start == end { start = 0; end = 0 }
                    guard let type = FrameType(rawValue: raw) else { return .closed("unknown frame type \(raw)") }
                    return .frame(type, payload)
                }
                need = 5 + len
            }
            // Make room for the whole frame.
            if start > 0 && cap - start < need {
                memmove(buf, buf + start, have)
                start = 0
                end = have
            }
            if cap - start < need {
                var n = cap
                while n - start < need { n *= 2 }
                buf = realloc(buf, n)!
                cap = n
            }
            // Spin briefly before blocking: the answer to a call usually comes within a few microseconds, and
            // blocking would cost a cross-CPU wake-up (tens of microseconds on a small VM) on each side.
            let spinUntil = monotonicNanos() + FrameChannel.spinNanos
            var spun = 0
            while true {
                let n = recv(fd, buf + end, cap - end, Int32(MSG_DONTWAIT))
                if n > 0 { spun = n; break }
                if n == 0 { return .closed(nil) }
                if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { break }
                if monotonicNanos() >= spinUntil { break }
            }
            if spun > 0 { end += spun; continue }
            if let deadline {
                let now = monotonicNanos()
                if now >= deadline { return .timeout }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ms = Int32(min((deadline - now + 999_999) / 1_000_000, UInt64(Int32.max)))
                let r = poll(&pfd, 1, ms)
                if r < 0 {
                    if errno == EINTR { continue }
                    return .closed("poll: \(String(cString: strerror(errno)))")
                }
                if r == 0 { continue }
            }
            let n = recv(fd, buf + end, cap - end, 0)
            if n == 0 { return .closed(nil) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                // The peer died with our request unread: that is its end, not a protocol error.
                if errno == ECONNRESET { return .closed(nil) }
                return .closed("recv: \(String(cString: strerror(errno)))")
            }
            end += n
        }
    }
}
