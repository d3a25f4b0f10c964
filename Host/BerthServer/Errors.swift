// Errors become HTTP answers here and nowhere else: a BerthError by its berth_status, plus the refusals that only
// HTTP has (authentication, body size), which the server makes itself.
import BerthPlugins
import BerthStore
import BerthWire
import Hummingbird
import NIOCore

/// A refusal that exists only in HTTP (401 without a valid token, 413 for a body over api.maxBodyBytes).
struct HTTPRefusal: Error, CustomStringConvertible {
    let status: Int
    let message: String
    init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
    var description: String { message }
}

/// The HTTP status of a berth_status: the one table (a value this host does not know is INTERNAL).
func httpStatus(_ e: BerthError) -> Int {
    switch e.status.known {
    case .invalidArgument, .outOfRange: return 400
    case .notFound: return 404
    case .alreadyExists, .failedPrecondition, .aborted: return 409
    case .resourceExhausted: return 507
    case .unimplemented: return 501
    case .unavailable: return 503
    default: return 500
    }
}

func errorResponse(_ error: Error) -> Response {
    switch error {
    case let e as BerthError:
        // A plugin's error: the whole line as the error, and what the plugin said in the details.
        var body: JSON = ["error": .string(e.plugin != nil ? e.description : e.message)]
        if let d = e.details { body = body.setting("details", d) }
        return render(httpStatus(e), body)
    case let e as HTTPRefusal:
        return render(e.status, ["error": .string(e.message)])
    case let e as EventsCompacted:
        return render(410, ["error": .string(e.description), "oldestRevision": .number(Double(e.oldestRevision))])
    case is NIOTooManyBytesError:
        return render(413, ["error": "request body too large"])
    case let e as SiteError:
        return render(400, ["error": .string(e.description), "problems": .array(e.problems.map { .string($0) })])
    default:
        return render(500, ["error": .string("\(error)")])
    }
}
