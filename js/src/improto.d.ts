// Type declarations of improto.js, the ngx_im wire codec (docs/PROTOCOL.md).
// A MsgId is a 32-character string, one character per byte.

export declare const CMD: Readonly<{
  CONNECT: 1;
  CONNECT_ACK: 2;
  PUBLISH: 3;
  PUB_ACK: 4;
  GROUP_PUBLISH: 5;
  GROUP_PUB_ACK: 6;
  PING: 7;
  PING_RESP: 8;
  DISCONNECT: 9;
  INVALID_PACKET: 10;
  GROUP_PART_PUBLISH: 11;
  GROUP_PART_PUB_ACK: 12;
  RECEIPT: 13;
  LOGOUT: 20;
}>;
export type Cmd = (typeof CMD)[keyof typeof CMD];
export type PushCmd = 3 | 5 | 11;
export type AckCmd = 4 | 6 | 12;

export declare const CMD_NAME: Readonly<Record<number, keyof typeof CMD>>;
export declare const MSGID_LEN: 32;
export declare const MAX_PAYLOAD: 32767;
export declare const MAX_UINT16: 65535;
export declare const MAX_UINT32: 4294967295;

export declare const CONNECT_CODE: Readonly<{
  ACCEPTED: 0;
  DUPLICATE: 1;
  SERVICE_UNAVAILABLE: 2;
  BAD_CREDENTIALS: 3;
}>;
export type ConnectCodeName = 'accepted' | 'duplicate' | 'service_unavailable' | 'bad_credentials' | 'unknown';
export interface ConnectCodeInfo {
  code: number;
  name: ConnectCodeName;
  text: string;
}
export declare function connectCodeInfo(code: number): ConnectCodeInfo;
export declare function ackCmdFor(pushCmd: number): AckCmd;

export type ProtoErrorReason =
  | 'empty' | 'unknown_cmd' | 'truncated' | 'length' | 'trailing'
  | 'payload_too_large' | 'too_long' | 'bad_msgid' | 'bad_uid' | 'bad_value';

export declare class ProtoError extends Error {
  constructor(reason: ProtoErrorReason, message: string, extra?: { cmd?: number; msgId?: string });
  name: 'ProtoError';
  reason: ProtoErrorReason;
  cmd?: number;
  msgId?: string;
}

/** Bytes: a string is UTF-8 encoded. */
export type BytesLike = string | Uint8Array | ArrayBuffer | ArrayBufferView;
export type MsgIdLike = string | Uint8Array | ArrayBuffer | ArrayBufferView;
export interface EncodeLimits {
  maxPayload?: number;
}

export declare function toBytes(v: BytesLike): Uint8Array;
export declare function msgIdToBytes(msgId: MsgIdLike): Uint8Array;
export declare function bytesToMsgId(bytes: Uint8Array): string;
/** A random (v4) UUID as 32 lowercase hex characters. */
export declare function newMsgId(): string;

export declare function encodeConnect(m: {
  username: string | Uint8Array;
  password: string | Uint8Array;
  role?: number;
  clientId?: number;
}): Uint8Array;
export declare function encodeConnectAck(code: number): Uint8Array;
export declare function encodePublish(
  m: { toUid: number; msgId: MsgIdLike; payload: BytesLike }, limits?: EncodeLimits): Uint8Array;
export declare function encodePush(
  m: { msgId: MsgIdLike; payload: BytesLike }, limits?: EncodeLimits): Uint8Array;
export declare function encodeGroupPublish(
  m: { gid: number; msgId: MsgIdLike; payload: BytesLike }, limits?: EncodeLimits): Uint8Array;
export declare function encodeGroupPartPublish(
  m: { gid: number; msgId: MsgIdLike; uids: readonly number[]; payload: BytesLike },
  limits?: EncodeLimits): Uint8Array;
export declare function encodeAck(cmd: number, msgId: MsgIdLike, extra?: BytesLike): Uint8Array;
export declare function encodePing(): Uint8Array;
export declare function encodePingResp(): Uint8Array;
export declare function encodeDisconnect(): Uint8Array;
export declare function encodeLogout(): Uint8Array;
/** RECEIPT (13, server -> client): uid acknowledged msgId. */
export declare function encodeReceipt(m: { msgId: MsgIdLike; uid: number }): Uint8Array;
export declare function encodeInvalid(cmd: number, msgId?: MsgIdLike | null): Uint8Array;

// ------------------------------------------------------------ decoded messages

export interface ConnectAckMessage extends ConnectCodeInfo { cmd: 2 }
export interface PushMessage { cmd: 3; msgId: string; payload: Uint8Array }
export interface GroupMessage { cmd: 5; gid: number; msgId: string; payload: Uint8Array }
export interface GroupPartMessage { cmd: 11; gid: number; msgId: string; uids: number[]; payload: Uint8Array }
export interface AckMessage { cmd: AckCmd; msgId: string; extra: Uint8Array }
export interface BareMessage<C extends number> { cmd: C }
export interface InvalidMessage { cmd: 10; invalidCmd: number; msgId?: string }
export interface ReceiptMessage { cmd: 13; msgId: string; uid: number }

/** What the server sends. */
export type ServerMessage =
  | ConnectAckMessage | PushMessage | GroupMessage | GroupPartMessage | AckMessage
  | BareMessage<7 | 8 | 9 | 20> | InvalidMessage | ReceiptMessage;

export interface ConnectMessage {
  cmd: 1;
  username: string;
  password: string;
  usernameBytes: Uint8Array;
  passwordBytes: Uint8Array;
  role?: number;
  clientId?: number;
}
export interface PublishMessage { cmd: 3; toUid: number; msgId: string; payload: Uint8Array }

/** What a client sends. */
export type ClientMessage =
  | ConnectMessage | PublishMessage | GroupMessage | GroupPartMessage | AckMessage
  | BareMessage<7 | 8 | 9>;

/** Throws ProtoError on anything malformed. */
export declare function decodeServerMessage(buf: BytesLike): ServerMessage;
/** Throws ProtoError on anything malformed. */
export declare function decodeClientMessage(buf: BytesLike): ClientMessage;

export type ParsedPayload = { json: true; value: unknown } | { json: false; value: Uint8Array };
export declare function parsePayload(bytes: Uint8Array): ParsedPayload;
export declare function toHex(bytes: BytesLike): string;
