// JSONText — the byte-level half of JSON encoding, shared by the plugin kit's PluginJSON and the host's JSON
// (BerthWire): string escaping and integer formatting straight into a byte buffer. Both run on every plugin call
// and every API answer, so they copy unescaped runs in one piece and never build intermediate Strings.
// Standard library only: plugins built with the kit inherit nothing else.
public enum JSONText {
    /// Appends the decimal digits of `v`.
    public static func int(_ v: Int64, into out: inout [UInt8]) {
        if v == 0 { out.append(UInt8(ascii: "0")); return }
        var m = v < 0 ? UInt64(0) &- UInt64(bitPattern: v) : UInt64(v)
        if v < 0 { out.append(UInt8(ascii: "-")) }
        let start = out.count
        while m > 0 {
            out.append(UInt8(ascii: "0") + UInt8(m % 10))
            m /= 10
        }
        out[start...].reverse()
    }

    /// Appends `s` as a JSON string literal (quotes included). Runs of bytes that need no escape are copied in one piece.
    public static func quote(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { u in
            var run = 0
            for i in 0..<u.count {
                let c = u[i]
                guard c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") else { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<i]))
                run = i + 1
                switch c {
                case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
                case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
                case UInt8(ascii: "\n"): out.append(contentsOf: "\\n".utf8)
                case UInt8(ascii: "\r"): out.append(contentsOf: "\\r".utf8)
                case UInt8(ascii: "\t"): out.append(contentsOf: "\\t".utf8)
                default:
                    let hex = Array("0123456789abcdef".utf8)
                    out.append(contentsOf: "\\u00".utf8)
                    out.append(hex[Int(c >> 4)])
                    out.append(hex[Int(c & 15)])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<u.count]))
        }
        out.append(UInt8(ascii: "\""))
    }

}
