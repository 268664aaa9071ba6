// An SMSC on loopback for smsinbox's SMPP tests: node-smpp's server, driven over stdin and
// stdout in JSON lines, so a test decides what is delivered, in which order, how each
// submit_sm is answered, and sees every answer.
//
//   node smsc.js PORT SYSTEM_ID PASSWORD
//
// Several ESME sessions may be bound at once (a transmitter and a receiver, say); each event
// about one names its bind `mode` ("bind_transceiver", "bind_receiver", "bind_transmitter").
//
// Events out:
//   {"event":"listening"}
//   {"event":"bound","mode":...,"system_id":...}
//   {"event":"enquire_link"}, {"event":"unbound"}, {"event":"closed"}
//   {"event":"answer","id":N,"command":...,"status":S}: the answer to a "deliver" or
//     "receipt" command N (status -1: no session bound that could take it).
//   {"event":"answer","id":null,"submit":N,"command":...,"status":S}: the answer to the
//     receipt the policy sent on its own for submit_sm N.
//   {"event":"submit","id":N,"mode":...,"pdu":{...},"answer":{"status":S,"message_id":M}}:
//     submit_sm number N (1, 2, ... for the life of the process) as node-smpp read it,
//     short_message and message_payload (and unknown TLVs) in hex; "answer" is what it was
//     answered with, null while held (see "respond").
//   {"event":"policy"}: a "policy" command is in force (for every submit_sm read after it).
//   {"event":"error","op":...,"message":...}: a command that could not be carried out.
//
// Commands in:
//   {"op":"deliver","id":N,"command":"deliver_sm"|"data_sm","pdu":{...}}: short_message and
//     message_payload are hex, other fields node-smpp's; answered by an "answer" event.
//   {"op":"policy","answer":"accept"|"reject"|"hold","status":S,"id_prefix":P,
//    "receipt":null|{"stat":...,"err":...,"form":...,"when":"before"|"after","delay_ms":D}}:
//     how each submit_sm from now on is answered (fields left out take these defaults):
//     - "accept" (default): ESME_ROK, message_id P + N (P defaults to "node-");
//     - "reject": command_status S (default 0x45, ESME_RSUBMITFAIL);
//     - "hold": no answer until a "respond" command for it.
//     With "receipt", every accepted submit_sm also gets a delivery receipt (fields as for
//     the "receipt" command), sent "before" its submit_sm_resp (which then waits for the
//     receipt's answer: the ESME reads the receipt before it knows the id) or "after" it
//     (default: D milliseconds after the submit_sm_resp is written, default 0).
//   {"op":"respond","id":N,"status":S,"message_id":M}: answer held submit_sm N (status
//     default 0, message_id default P + N).
//   {"op":"receipt","id":N,"submit":K,"message_id":M,"stat":"DELIVRD","err":"000",
//    "form":"text"|"tlv"|"both","source_addr":...,"destination_addr":...}: a delivery
//     receipt (deliver_sm, esm_class 0x04) naming M (default: the id submit_sm K was
//     answered with), from the submit's destination to its source (or the addresses
//     given); in the text form (`id:M sub:001 dlvrd:... stat:... err:...`), as TLVs only
//     (receipted_message_id 0x001E, message_state 0x0427; empty short_message), or both.
//     Answered by an "answer" event.
//   {"op":"unbind"}: unbind every bound session.
//   "deliver", "receipt" and "unbind" take "mode" to pick the session by its bind mode;
//   by default "deliver" and "receipt" go to the receiver or transceiver bound last.
"use strict";

const readline = require("readline");
const smpp = require("smpp");

const [port, systemId, password] = process.argv.slice(2);
const sessions = []; // {session, mode}, in the order they bound
const submits = new Map(); // submit number -> {pdu, session, answered, message_id}
let submitCount = 0;
let policy = defaultPolicy();

const MESSAGE_STATES = {
  ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8,
};

// submit_sm and message_payload are read as the octets that came, not decoded to text by
// node-smpp's guess of their alphabet: the test reads them itself.
const keepOctets = (filter) => ({ encode: filter.encode, decode: (value) => value });
smpp.commands.submit_sm.params.short_message.filter = keepOctets(
  smpp.commands.submit_sm.params.short_message.filter
);
smpp.tlvs.message_payload.filter = keepOctets(smpp.tlvs.message_payload.filter);

function defaultPolicy() {
  return { answer: "accept", status: 0x45, id_prefix: "node-", receipt: null };
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

function plain(pdu) {
  const fields = {};
  for (const key of Object.keys(pdu)) {
    const value = pdu[key];
    if (Buffer.isBuffer(value)) fields[key] = value.toString("hex");
    else if (value instanceof Date) fields[key] = value.toISOString();
    else fields[key] = value;
  }
  return fields;
}

function boundSession(mode) {
  for (let i = sessions.length - 1; i >= 0; i--) {
    const entry = sessions[i];
    if (mode ? entry.mode === mode : entry.mode !== "bind_transmitter") return entry.session;
  }
  return null;
}

function timestamp(date) {
  const two = (n) => String(n).padStart(2, "0");
  return (
    two(date.getUTCFullYear() % 100) + two(date.getUTCMonth() + 1) + two(date.getUTCDate()) +
    two(date.getUTCHours()) + two(date.getUTCMinutes())
  );
}

// The deliver_sm of a receipt: `spec` as the "receipt" command describes it.
function receiptPdu(spec) {
  const submit = spec.submit !== undefined ? submits.get(spec.submit) : undefined;
  if (spec.submit !== undefined && !submit) throw new Error("no submit_sm " + spec.submit);
  const messageId = spec.message_id !== undefined ? spec.message_id : submit && submit.message_id;
  if (messageId === undefined || messageId === null) throw new Error("no message_id to name");
  const stat = spec.stat || "DELIVRD";
  const err = spec.err || "000";
  const form = spec.form || "text";
  const fields = {
    source_addr: spec.source_addr || (submit ? submit.pdu.destination_addr : ""),
    destination_addr: spec.destination_addr || (submit ? submit.pdu.source_addr : ""),
    esm_class: 0x04,
    data_coding: 0,
    short_message: Buffer.alloc(0),
  };
  if (form === "text" || form === "both") {
    const now = timestamp(new Date());
    const text =
      `id:${messageId} sub:001 dlvrd:${stat === "DELIVRD" ? "001" : "000"} ` +
      `submit date:${now} done date:${now} stat:${stat} err:${err} text:`;
    fields.short_message = Buffer.from(text, "latin1");
  }
  if (form === "tlv" || form === "both") {
    fields.receipted_message_id = String(messageId);
    fields.message_state = MESSAGE_STATES[stat];
  }
  return fields;
}

function sendReceipt(session, fields, answered) {
  const sent = session.deliver_sm(fields, function (answer) {
    answered(answer.command, answer.command_status);
  });
  if (!sent) answered(null, -1);
}

function answerSubmit(number, status, messageId) {
  const submit = submits.get(number);
  submit.answered = true;
  submit.message_id = status === 0 ? messageId : null;
  const fields = status === 0 ? { message_id: messageId } : { command_status: status };
  submit.session.send(submit.pdu.response(fields));
}

function onSubmit(bound, mode, pdu) {
  const number = ++submitCount;
  const plan = policy;
  const messageId = plan.id_prefix + number;
  const submit = { pdu: pdu, session: bound, answered: false, message_id: null };
  submits.set(number, submit);
  const event = { event: "submit", id: number, mode: mode, pdu: plain(pdu), answer: null };
  if (plan.answer === "hold") {
    emit(event);
    return;
  }
  const status = plan.answer === "reject" ? plan.status : 0;
  event.answer = { status: status, message_id: status === 0 ? messageId : null };
  emit(event);
  if (status !== 0 || !plan.receipt) {
    answerSubmit(number, status, messageId);
    return;
  }
  submit.message_id = messageId; // named by the receipt before the answer is written
  const fields = receiptPdu(Object.assign({ submit: number }, plan.receipt));
  const reportReceipt = function (command, answerStatus) {
    emit({ event: "answer", id: null, submit: number, command: command, status: answerStatus });
  };
  if (plan.receipt.when === "before") {
    sendReceipt(bound, fields, function (command, answerStatus) {
      reportReceipt(command, answerStatus);
      answerSubmit(number, 0, messageId);
    });
  } else {
    answerSubmit(number, 0, messageId);
    setTimeout(function () {
      sendReceipt(bound, fields, reportReceipt);
    }, plan.receipt.delay_ms || 0);
  }
}

const server = smpp.createServer(function (bound) {
  let boundMode = null;
  for (const mode of ["bind_transceiver", "bind_receiver", "bind_transmitter"]) {
    bound.on(mode, function (pdu) {
      if (pdu.system_id !== systemId || pdu.password !== password) {
        bound.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
        bound.close();
        return;
      }
      boundMode = mode;
      sessions.push({ session: bound, mode: mode });
      bound.send(pdu.response({ system_id: "NODESMSC" }));
      emit({ event: "bound", mode: mode, system_id: pdu.system_id });
    });
  }
  bound.on("submit_sm", function (pdu) {
    if (boundMode === null || boundMode === "bind_receiver") {
      bound.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      emit({ event: "error", op: "submit_sm", message: "submit_sm on a " + boundMode + " session" });
      return;
    }
    onSubmit(bound, boundMode, pdu);
  });
  bound.on("enquire_link", function (pdu) {
    bound.send(pdu.response());
    emit({ event: "enquire_link" });
  });
  bound.on("unbind", function (pdu) {
    bound.send(pdu.response());
    emit({ event: "unbound" });
    bound.close();
  });
  bound.on("close", function () {
    for (let i = sessions.length - 1; i >= 0; i--) {
      if (sessions[i].session === bound) sessions.splice(i, 1);
    }
    emit({ event: "closed" });
  });
  bound.on("error", function () {});
});

function deliver(command) {
  const session = boundSession(command.mode);
  if (!session) {
    emit({ event: "answer", id: command.id, status: -1 });
    return;
  }
  const fields = Object.assign({}, command.pdu);
  for (const octets of ["short_message", "message_payload"]) {
    if (typeof fields[octets] === "string") fields[octets] = Buffer.from(fields[octets], "hex");
  }
  session[command.command || "deliver_sm"](fields, function (answer) {
    emit({
      event: "answer",
      id: command.id,
      command: answer.command,
      status: answer.command_status,
    });
  });
}

function receipt(command) {
  const session = boundSession(command.mode);
  if (!session) {
    emit({ event: "answer", id: command.id, status: -1 });
    return;
  }
  sendReceipt(session, receiptPdu(command), function (answerCommand, status) {
    emit({ event: "answer", id: command.id, command: answerCommand, status: status });
  });
}

function respond(command) {
  const submit = submits.get(command.id);
  if (!submit) throw new Error("no submit_sm " + command.id);
  if (submit.answered) throw new Error("submit_sm " + command.id + " is answered already");
  const status = command.status || 0;
  const messageId =
    command.message_id !== undefined ? command.message_id : policy.id_prefix + command.id;
  answerSubmit(command.id, status, messageId);
}

const handlers = {
  deliver: deliver,
  receipt: receipt,
  respond: respond,
  policy: function (command) {
    const { op, ...fields } = command;
    const known = Object.keys(defaultPolicy());
    for (const key of Object.keys(fields)) {
      if (!known.includes(key)) throw new Error("unknown policy field " + key);
    }
    if (!["accept", "reject", "hold"].includes(fields.answer || "accept")) {
      throw new Error("unknown answer " + fields.answer);
    }
    policy = Object.assign(defaultPolicy(), fields);
    emit({ event: "policy" });
  },
  unbind: function (command) {
    for (const entry of sessions.slice()) {
      if (!command.mode || entry.mode === command.mode) entry.session.unbind();
    }
  },
};

readline.createInterface({ input: process.stdin }).on("line", function (line) {
  let command = {};
  try {
    command = JSON.parse(line);
    const handler = handlers[command.op];
    if (!handler) throw new Error("unknown op");
    handler(command);
  } catch (error) {
    emit({ event: "error", op: command.op, message: String(error && error.message) });
  }
});

server.listen(Number(port), "127.0.0.1", function () {
  emit({ event: "listening" });
});
