// GET /openapi.json: the API's OpenAPI 3.1 document (Host/BerthServer/openapi.json), compiled into the binary
// (a SwiftPM resource embedded in code), so a berthd moved anywhere still serves it.
import Hummingbird
import NIOCore

extension APIServer {
    /// The document's bytes, as kept in the repository.
    public static var openAPIDocument: [UInt8] { PackageResources.openapi_json }

    func registerOpenAPIRoute(_ router: Router<Ctx>) {
        routes.add(.get, "/openapi.json")  // for the 405 of another method (Routes.swift)
        router.get("/openapi.json") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(bytes: APIServer.openAPIDocument)))
        }
    }
}
