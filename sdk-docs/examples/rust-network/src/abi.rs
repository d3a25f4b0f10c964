//! The parts of `PluginABI/include/berth_plugin.h` (ABI 1.0) this plugin uses, declared by hand.
//!
//! Every struct is `#[repr(C)]` with the fields in the header's order. Function pointers the host may leave
//! NULL, or that the plugin leaves NULL, are `Option<extern "C" fn>` (same size as a pointer, NULL = None).
//! The size assertions at the bottom fail the build if a declaration drifts from the header.
#![allow(dead_code)]

use std::ffi::{c_char, c_void};

/// `berth_status`: an int-sized C enum.
pub type Status = u32;
pub const BERTH_OK: Status = 0;
pub const BERTH_INVALID_ARGUMENT: Status = 3;
pub const BERTH_NOT_FOUND: Status = 5;
pub const BERTH_ALREADY_EXISTS: Status = 6;
pub const BERTH_RESOURCE_EXHAUSTED: Status = 8;
pub const BERTH_FAILED_PRECONDITION: Status = 9;
pub const BERTH_ABORTED: Status = 10;
pub const BERTH_OUT_OF_RANGE: Status = 11;
pub const BERTH_UNIMPLEMENTED: Status = 12;
pub const BERTH_INTERNAL: Status = 13;
pub const BERTH_UNAVAILABLE: Status = 14;

pub const BERTH_LOG_DEBUG: u32 = 0;
pub const BERTH_LOG_INFO: u32 = 1;
pub const BERTH_LOG_WARN: u32 = 2;
pub const BERTH_LOG_ERROR: u32 = 3;

pub const BERTH_ABI_MAJOR: u16 = 1;
pub const BERTH_ABI_MINOR: u16 = 0;
pub const BERTH_KIND_NETWORK: u32 = 1 << 0;
pub const BERTH_THREADS_SERIAL: u32 = 0;
pub const BERTH_THREADS_CONCURRENT: u32 = 1;

#[repr(C)]
pub struct Sink {
    pub struct_size: u32,
    pub ctx: *mut c_void,
    pub write: Option<unsafe extern "C" fn(ctx: *mut c_void, data: *const c_char, len: usize) -> Status>,
}

#[repr(C)]
pub struct HostServices {
    pub struct_size: u32,
    pub host_abi_major: u16,
    pub host_abi_minor: u16,
    pub host_ctx: *mut c_void,
    pub log: Option<unsafe extern "C" fn(ctx: *mut c_void, level: u32, msg: *const c_char, len: usize)>,
    pub kv_get: Option<unsafe extern "C" fn(ctx: *mut c_void, key: *const c_char, key_len: usize, value_out: *const Sink) -> Status>,
    pub kv_put: Option<
        unsafe extern "C" fn(ctx: *mut c_void, key: *const c_char, key_len: usize, value: *const c_char, value_len: usize) -> Status,
    >,
    pub kv_delete: Option<unsafe extern "C" fn(ctx: *mut c_void, key: *const c_char, key_len: usize) -> Status>,
    pub kv_next: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            prefix: *const c_char,
            prefix_len: usize,
            after: *const c_char,
            after_len: usize,
            key_out: *const Sink,
            value_out: *const Sink,
        ) -> Status,
    >,
    pub emit_event: Option<unsafe extern "C" fn(ctx: *mut c_void, ty: *const c_char, json: *const c_char, len: usize) -> Status>,
}

/// `berth_json_op`
pub type JsonOp = Option<
    unsafe extern "C" fn(instance: *mut c_void, req: *const c_char, req_len: usize, out: *const Sink, err: *mut c_char, err_cap: usize) -> Status,
>;

/// The shape of `admin` and of the descriptor's generic `call`: a NUL-terminated name before the request.
pub type NamedOp = Option<
    unsafe extern "C" fn(
        instance: *mut c_void,
        name: *const c_char,
        req: *const c_char,
        req_len: usize,
        out: *const Sink,
        err: *mut c_char,
        err_cap: usize,
    ) -> Status,
>;

#[repr(C)]
pub struct NetworkOps {
    pub struct_size: u32,
    pub add: JsonOp,
    pub del: JsonOp,
    pub check: JsonOp,
    pub gc: JsonOp,
    pub status: JsonOp,
    pub capacity: JsonOp,
    pub admin: NamedOp,
}

#[repr(C)]
pub struct Descriptor {
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub name: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,
    pub kinds: u32,
    pub thread_contract: u32,
    pub config_schema: *const c_char,
    pub create: Option<
        unsafe extern "C" fn(
            host: *const HostServices,
            config: *const c_char,
            config_len: usize,
            instance_out: *mut *mut c_void,
            err: *mut c_char,
            err_cap: usize,
        ) -> Status,
    >,
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    pub reconfigure:
        Option<unsafe extern "C" fn(instance: *mut c_void, config: *const c_char, len: usize, err: *mut c_char, err_cap: usize) -> Status>,
    pub network: *const NetworkOps,
    pub storage: *const c_void,   // berth_storage_ops, unused here
    pub scheduler: *const c_void, // berth_scheduler_ops, unused here
    pub discovery: *const c_void, // berth_discovery_ops, unused here
    pub call: NamedOp,
}

/// Statics holding raw pointers must be `Sync`; the descriptor is immutable, so this is sound.
pub struct Static<T>(pub T);
unsafe impl<T> Sync for Static<T> {}

// Checked against sizeof() in C on LP64 targets (x86_64, aarch64).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<Sink>() == 24);
    assert!(std::mem::size_of::<HostServices>() == 64);
    assert!(std::mem::size_of::<NetworkOps>() == 64);
    assert!(std::mem::size_of::<Descriptor>() == 112);
};
