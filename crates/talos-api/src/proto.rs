//! The machine API messages and method paths this crate uses, written by hand from the field
//! names and numbers of Talos's `api/machine/machine.proto` and `api/common/common.proto`
//! (package `machine`, service `MachineService`). Public so test servers can speak the same wire
//! format; fields this crate does not read are left out (protobuf skips unknown fields).

/// `common.Metadata`: set by apid on every message of a response; `error` is non-empty when the
/// call failed on that node (apid's proxy fills it instead of failing the whole call).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(string, tag = "1")]
    pub hostname: String,
    #[prost(string, tag = "2")]
    pub error: String,
}

/// `common.Data`: one chunk of a byte stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Data {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(bytes = "vec", tag = "2")]
    pub bytes: Vec<u8>,
}

/// `machine.BootstrapRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BootstrapRequest {
    #[prost(bool, tag = "1")]
    pub recover_etcd: bool,
    #[prost(bool, tag = "2")]
    pub recover_skip_hash_check: bool,
}

/// `machine.Bootstrap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bootstrap {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
}

/// `machine.BootstrapResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BootstrapResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Bootstrap>,
}

/// `machine.EtcdMemberListRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdMemberListRequest {
    #[prost(bool, tag = "1")]
    pub query_local: bool,
}

/// `machine.EtcdMember` (tag 1 is unused upstream).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdMember {
    #[prost(uint64, tag = "2")]
    pub id: u64,
    #[prost(string, tag = "3")]
    pub hostname: String,
    #[prost(string, repeated, tag = "4")]
    pub peer_urls: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub client_urls: Vec<String>,
    #[prost(bool, tag = "6")]
    pub is_learner: bool,
}

/// `machine.EtcdMembers`: one node's view of the member list.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdMembers {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(message, repeated, tag = "3")]
    pub members: Vec<EtcdMember>,
}

/// `machine.EtcdMemberListResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdMemberListResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<EtcdMembers>,
}

/// `machine.EtcdLeaveClusterRequest` (no fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdLeaveClusterRequest {}

/// `machine.EtcdLeaveCluster`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdLeaveCluster {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
}

/// `machine.EtcdLeaveClusterResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdLeaveClusterResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<EtcdLeaveCluster>,
}

/// `machine.EtcdRemoveMemberByIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdRemoveMemberByIdRequest {
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
}

/// `machine.EtcdRemoveMemberByID`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdRemoveMemberById {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
}

/// `machine.EtcdRemoveMemberByIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdRemoveMemberByIdResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<EtcdRemoveMemberById>,
}

/// gRPC method paths (`/package.Service/Method`) of `machine.MachineService`.
pub mod path {
    pub const BOOTSTRAP: &str = "/machine.MachineService/Bootstrap";
    /// Request `google.protobuf.Empty`, response a server stream of `common.Data`.
    pub const KUBECONFIG: &str = "/machine.MachineService/Kubeconfig";
    pub const ETCD_MEMBER_LIST: &str = "/machine.MachineService/EtcdMemberList";
    pub const ETCD_LEAVE_CLUSTER: &str = "/machine.MachineService/EtcdLeaveCluster";
    pub const ETCD_REMOVE_MEMBER_BY_ID: &str = "/machine.MachineService/EtcdRemoveMemberByID";
}

/// Each response message's metadata, for the per-node error check.
pub trait HasMetadata {
    fn metadata(&self) -> Option<&Metadata>;
}

macro_rules! has_metadata {
    ($($t:ty),*) => {$(
        impl HasMetadata for $t {
            fn metadata(&self) -> Option<&Metadata> {
                self.metadata.as_ref()
            }
        }
    )*};
}
has_metadata!(
    Data,
    Bootstrap,
    EtcdMembers,
    EtcdLeaveCluster,
    EtcdRemoveMemberById
);
