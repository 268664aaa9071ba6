// An SMSC on loopback for smsinbox's SMPP tests: node-smpp's server, driven over stdin and
// stdout in JSON lines, so a test decides what is delivered, in which order, and sees every
// answer.
//
//   node smsc.js PORT SYSTEM_ID PASSWORD
//
// Events out: {"event":"listening"}, {"event":"bound","mode":...},
// {"event":"answer","id":N,"command":...,"status":S}, {"event":"enquire_link"},
// {"event":"unbound"}, {"event":"closed"}.
// Commands in: {"op":"deliver","id":N,"command":"deliver_sm"|"data_sm","pdu":{...}}, where
// short_message and message_payload are hex and other fields are node-smpp's; and
// {"op":"unbind"}.
"use strict";

const readline = require("readline");
const smpp = require("smpp");

const [port, systemId, password] = process.argv.slice(2);
let session = null;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

const server = smpp.createServer(function (bound) {
  for (const mode of ["bind_transceiver", "bind_receiver", "bind_transmitter"]) {
    bound.on(mode, function (pdu) {
      if (pdu.system_id !== systemId || pdu.password !== password) {
        bound.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
        bound.close();
        return;
      }
      session = bound;
      bound.send(pdu.response({ system_id: "NODESMSC" }));
      emit({ event: "bound", mode: mode, system_id: pdu.system_id });
    });
  }
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
    if (session === bound) session = null;
    emit({ event: "closed" });
  });
  bound.on("error", function () {});
});

readline.createInterface({ input: process.stdin }).on("line", function (line) {
  const command = JSON.parse(line);
  if (command.op === "unbind" && session) {
    session.unbind();
    return;
  }
  if (command.op !== "deliver") return;
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
});

server.listen(Number(port), "127.0.0.1", function () {
  emit({ event: "listening" });
});
