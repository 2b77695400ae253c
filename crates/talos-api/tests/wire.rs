//! Wire compatibility with the official Talos protos: every message the client sends or the
//! test apid answers, encoded with this crate's hand-written types, decodes with descriptors
//! compiled from Talos's own `.proto` files (and the other way round), and the method paths
//! and streaming kinds match `machine.MachineService`.
//!
//! The protos are not part of the project: `GVB_TALOS_API_PROTOS` points at a directory holding
//! `machine/machine.proto`, `common/common.proto` and `google/rpc/status.proto` of a Talos
//! release. Without it the tests skip, except under `CI=true`, where they fail.
#![allow(clippy::unwrap_used)]

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use talos_api::proto::{self, path};

fn pool() -> Option<DescriptorPool> {
    let Some(dir) = std::env::var_os("GVB_TALOS_API_PROTOS") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "GVB_TALOS_API_PROTOS is not set (the directory of Talos's api/ protos); CI must set it"
        );
        eprintln!("skipped: set GVB_TALOS_API_PROTOS to the Talos api/ protos directory");
        return None;
    };
    let mut compiler = protox::Compiler::new([dir]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("machine/machine.proto").unwrap();
    Some(compiler.descriptor_pool())
}

fn msg(pool: &DescriptorPool, name: &str) -> MessageDescriptor {
    pool.get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is not in the official protos"))
}

/// Ours → bytes → the official descriptor.
fn to_official<M: Message>(pool: &DescriptorPool, name: &str, m: &M) -> DynamicMessage {
    DynamicMessage::decode(msg(pool, name), m.encode_to_vec().as_slice()).unwrap()
}

/// The official message → bytes → ours.
fn from_official<M: Message + Default>(d: &DynamicMessage) -> M {
    M::decode(d.encode_to_vec().as_slice()).unwrap()
}

fn field(d: &DynamicMessage, name: &str) -> Value {
    assert!(
        d.descriptor().get_field_by_name(name).is_some(),
        "{} has no field {name}",
        d.descriptor().full_name()
    );
    d.get_field_by_name(name).unwrap().into_owned()
}

fn dynamic(pool: &DescriptorPool, name: &str, fields: Vec<(&str, Value)>) -> DynamicMessage {
    let mut d = DynamicMessage::new(msg(pool, name));
    for (f, v) in fields {
        d.try_set_field_by_name(f, v)
            .unwrap_or_else(|e| panic!("{name}.{f}: {e}"));
    }
    d
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn list(v: Vec<DynamicMessage>) -> Value {
    Value::List(v.into_iter().map(Value::Message).collect())
}

/// Official `common.Metadata` with every field, `status` included (which we do not model).
fn official_metadata(pool: &DescriptorPool, error: &str) -> DynamicMessage {
    let status = dynamic(
        pool,
        "google.rpc.Status",
        vec![("code", Value::I32(5)), ("message", s("nope"))],
    );
    dynamic(
        pool,
        "common.Metadata",
        vec![
            ("hostname", s("cp-1")),
            ("error", s(error)),
            ("status", Value::Message(status)),
        ],
    )
}

fn our_metadata(error: &str) -> Option<proto::Metadata> {
    Some(proto::Metadata {
        hostname: "cp-1".into(),
        error: error.into(),
    })
}

fn check_metadata(d: &DynamicMessage, error: &str) {
    let md = field(d, "metadata");
    let md = md.as_message().unwrap();
    assert_eq!(field(md, "hostname"), s("cp-1"));
    assert_eq!(field(md, "error"), s(error));
}

#[test]
fn method_paths_and_streaming_kinds_match_the_official_service() {
    let Some(pool) = pool() else { return };
    let service = pool.get_service_by_name("machine.MachineService").unwrap();
    // (our path, request type, response type, server streaming)
    let ours = [
        (
            path::BOOTSTRAP,
            "machine.BootstrapRequest",
            "machine.BootstrapResponse",
            false,
        ),
        (
            path::KUBECONFIG,
            "google.protobuf.Empty",
            "common.Data",
            true,
        ),
        (
            path::ETCD_MEMBER_LIST,
            "machine.EtcdMemberListRequest",
            "machine.EtcdMemberListResponse",
            false,
        ),
        (
            path::ETCD_LEAVE_CLUSTER,
            "machine.EtcdLeaveClusterRequest",
            "machine.EtcdLeaveClusterResponse",
            false,
        ),
        (
            path::ETCD_REMOVE_MEMBER_BY_ID,
            "machine.EtcdRemoveMemberByIDRequest",
            "machine.EtcdRemoveMemberByIDResponse",
            false,
        ),
    ];
    for (path, input, output, server_streaming) in ours {
        let method = service
            .methods()
            .find(|m| format!("/{}/{}", service.full_name(), m.name()) == path)
            .unwrap_or_else(|| panic!("{path} is not a method of the official service"));
        assert_eq!(method.input().full_name(), input, "{path}");
        assert_eq!(method.output().full_name(), output, "{path}");
        assert_eq!(method.is_server_streaming(), server_streaming, "{path}");
        assert!(!method.is_client_streaming(), "{path}");
    }
}

#[test]
fn requests_decode_with_the_official_descriptors() {
    let Some(pool) = pool() else { return };
    let d = to_official(
        &pool,
        "machine.BootstrapRequest",
        &proto::BootstrapRequest {
            recover_etcd: true,
            recover_skip_hash_check: true,
        },
    );
    assert_eq!(field(&d, "recover_etcd"), Value::Bool(true));
    assert_eq!(field(&d, "recover_skip_hash_check"), Value::Bool(true));

    let d = to_official(
        &pool,
        "machine.EtcdMemberListRequest",
        &proto::EtcdMemberListRequest { query_local: true },
    );
    assert_eq!(field(&d, "query_local"), Value::Bool(true));

    let id = 0xfedc_ba98_7654_3210;
    let d = to_official(
        &pool,
        "machine.EtcdRemoveMemberByIDRequest",
        &proto::EtcdRemoveMemberByIdRequest { member_id: id },
    );
    assert_eq!(field(&d, "member_id"), Value::U64(id));

    // Empty messages: nothing on the wire, and nothing unknown to the official side.
    assert!(proto::EtcdLeaveClusterRequest {}.encode_to_vec().is_empty());
    let d = to_official(
        &pool,
        "machine.EtcdLeaveClusterRequest",
        &proto::EtcdLeaveClusterRequest {},
    );
    assert_eq!(d.fields().count(), 0);
    let d = to_official(&pool, "google.protobuf.Empty", &());
    assert_eq!(d.fields().count(), 0);

    // And back: official requests decode into ours (what the test apid reads).
    let official = dynamic(
        &pool,
        "machine.EtcdRemoveMemberByIDRequest",
        vec![("member_id", Value::U64(id))],
    );
    let ours: proto::EtcdRemoveMemberByIdRequest = from_official(&official);
    assert_eq!(ours.member_id, id);
    let official = dynamic(
        &pool,
        "machine.BootstrapRequest",
        vec![("recover_etcd", Value::Bool(true))],
    );
    let ours: proto::BootstrapRequest = from_official(&official);
    assert!(ours.recover_etcd && !ours.recover_skip_hash_check);
}

#[test]
fn etcd_member_list_response_round_trips() {
    let Some(pool) = pool() else { return };
    let member = dynamic(
        &pool,
        "machine.EtcdMember",
        vec![
            ("id", Value::U64(u64::MAX - 7)),
            ("hostname", s("cp-2")),
            (
                "peer_urls",
                Value::List(vec![s("https://198.18.0.11:2380")]),
            ),
            (
                "client_urls",
                Value::List(vec![
                    s("https://198.18.0.11:2379"),
                    s("https://127.0.0.1:2379"),
                ]),
            ),
            ("is_learner", Value::Bool(true)),
        ],
    );
    let members = dynamic(
        &pool,
        "machine.EtcdMembers",
        vec![
            ("metadata", Value::Message(official_metadata(&pool, ""))),
            ("legacy_members", Value::List(vec![s("cp-2")])),
            ("members", list(vec![member])),
        ],
    );
    let official = dynamic(
        &pool,
        "machine.EtcdMemberListResponse",
        vec![("messages", list(vec![members]))],
    );

    let ours: proto::EtcdMemberListResponse = from_official(&official);
    let want = proto::EtcdMemberListResponse {
        messages: vec![proto::EtcdMembers {
            metadata: our_metadata(""),
            members: vec![proto::EtcdMember {
                id: u64::MAX - 7,
                hostname: "cp-2".into(),
                peer_urls: vec!["https://198.18.0.11:2380".into()],
                client_urls: vec![
                    "https://198.18.0.11:2379".into(),
                    "https://127.0.0.1:2379".into(),
                ],
                is_learner: true,
            }],
        }],
    };
    assert_eq!(ours, want);

    let back = to_official(&pool, "machine.EtcdMemberListResponse", &want);
    let messages = field(&back, "messages");
    let first = messages.as_list().unwrap()[0].as_message().unwrap().clone();
    check_metadata(&first, "");
    let m = field(&first, "members");
    let m = m.as_list().unwrap()[0].as_message().unwrap().clone();
    assert_eq!(field(&m, "id"), Value::U64(u64::MAX - 7));
    assert_eq!(field(&m, "hostname"), s("cp-2"));
    assert_eq!(
        field(&m, "peer_urls"),
        Value::List(vec![s("https://198.18.0.11:2380")])
    );
    assert_eq!(field(&m, "is_learner"), Value::Bool(true));
}

/// (response type, its item type, our decoder of the first item's metadata, our encoding).
type MetadataCase = (
    &'static str,
    &'static str,
    Box<dyn Fn(&[u8]) -> Option<proto::Metadata>>,
    Vec<u8>,
);

/// The responses that are a list of messages holding only metadata.
#[test]
fn metadata_only_responses_round_trip_with_the_node_error() {
    let Some(pool) = pool() else { return };
    let cases: [MetadataCase; 3] = [
        (
            "machine.BootstrapResponse",
            "machine.Bootstrap",
            Box::new(|b| {
                proto::BootstrapResponse::decode(b).unwrap().messages[0]
                    .metadata
                    .clone()
            }),
            proto::BootstrapResponse {
                messages: vec![proto::Bootstrap {
                    metadata: our_metadata("etcd failed"),
                }],
            }
            .encode_to_vec(),
        ),
        (
            "machine.EtcdLeaveClusterResponse",
            "machine.EtcdLeaveCluster",
            Box::new(|b| {
                proto::EtcdLeaveClusterResponse::decode(b).unwrap().messages[0]
                    .metadata
                    .clone()
            }),
            proto::EtcdLeaveClusterResponse {
                messages: vec![proto::EtcdLeaveCluster {
                    metadata: our_metadata("etcd failed"),
                }],
            }
            .encode_to_vec(),
        ),
        (
            "machine.EtcdRemoveMemberByIDResponse",
            "machine.EtcdRemoveMemberByID",
            Box::new(|b| {
                proto::EtcdRemoveMemberByIdResponse::decode(b)
                    .unwrap()
                    .messages[0]
                    .metadata
                    .clone()
            }),
            proto::EtcdRemoveMemberByIdResponse {
                messages: vec![proto::EtcdRemoveMemberById {
                    metadata: our_metadata("etcd failed"),
                }],
            }
            .encode_to_vec(),
        ),
    ];
    for (response, item, decode_ours, ours_encoded) in cases {
        // Official → ours: the error survives, `status` (not modelled) is skipped.
        let inner = dynamic(
            &pool,
            item,
            vec![(
                "metadata",
                Value::Message(official_metadata(&pool, "etcd failed")),
            )],
        );
        let official = dynamic(&pool, response, vec![("messages", list(vec![inner]))]);
        assert_eq!(
            decode_ours(&official.encode_to_vec()),
            our_metadata("etcd failed"),
            "{response}"
        );
        // Ours → official.
        let d = DynamicMessage::decode(msg(&pool, response), ours_encoded.as_slice()).unwrap();
        let messages = field(&d, "messages");
        check_metadata(
            messages.as_list().unwrap()[0].as_message().unwrap(),
            "etcd failed",
        );
    }
}

#[test]
fn kubeconfig_data_chunk_round_trips() {
    let Some(pool) = pool() else { return };
    let bytes = vec![0x1f, 0x8b, 0, 1, 2, 255];
    let ours = proto::Data {
        metadata: our_metadata(""),
        bytes: bytes.clone(),
    };
    let d = to_official(&pool, "common.Data", &ours);
    check_metadata(&d, "");
    assert_eq!(field(&d, "bytes"), Value::Bytes(bytes.clone().into()));

    let official = dynamic(
        &pool,
        "common.Data",
        vec![
            ("metadata", Value::Message(official_metadata(&pool, "boom"))),
            ("bytes", Value::Bytes(bytes.clone().into())),
        ],
    );
    let back: proto::Data = from_official(&official);
    assert_eq!(
        back,
        proto::Data {
            metadata: our_metadata("boom"),
            bytes
        }
    );
}
