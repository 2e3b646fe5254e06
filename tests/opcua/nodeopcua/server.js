// A small node-opcua server: the second OPC UA stack the gateway is tested against.
//
//   node server.js <port> <none|sign|encrypt> <pki root folder> [<GoodCount at start>]
//
// Namespaces: a vendor namespace is registered before ours, so ours is not ns=2 (ns=1 is the
// server's own). Under Objects/Press (our namespace):
//   GoodCount      UInt32                      the good-parts counter
//   AbstractCount  declared UInteger (abstract), its values are UInt32
//   Ratio          Double                      not a counter
//   AbstractRatio  declared Number (abstract), its value a Double: not a counter either
//   State          String                      "running" / "idle" / "down"
// The vendor namespace has a Decoy folder with a GoodCount of its own (ns=2;s=Press.GoodCount
// in the first namespace): a gateway that took an old index would read the wrong node.
//
// With "encrypt" only Basic256Sha256 SignAndEncrypt is offered ("sign": Sign) and client certificates are
// checked against <pki>/trusted/certs (an unknown one lands in <pki>/rejected).
//
// With NODEOPCUA_USERS="name:password" only that user gets a session (no anonymous one).
//
// When listening it prints one JSON line ({"ready": true, ...}); then it takes commands on
// stdin, one a line, and answers each with one JSON line:
//   set <GoodCount|AbstractCount|State|Ratio> <value>
//   add <GoodCount|AbstractCount> <n>          (modulo 2^32, like a PLC's UInt32)
"use strict";

const path = require("path");
const readline = require("readline");
const {
    OPCUAServer,
    OPCUACertificateManager,
    MessageSecurityMode,
    SecurityPolicy,
    DataType,
    Variant,
} = require("node-opcua");

const VENDOR_URI = "urn:other-vendor:registered-first";
const OUR_URI = "urn:edge-gateway:tests:nodeopcua-press";
const WRAP = 2 ** 32;

async function main() {
    const [portArg, security, pkiRoot, goodArg] = process.argv.slice(2);
    const port = Number(portArg);
    const users = process.env.NODEOPCUA_USERS
        ? Object.fromEntries(process.env.NODEOPCUA_USERS.split(",").map((u) => u.split(":")))
        : null;
    const secure = security === "encrypt" || security === "sign";
    const mode = security === "sign" ? MessageSecurityMode.Sign : MessageSecurityMode.SignAndEncrypt;
    const certificateManager = new OPCUACertificateManager({
        rootFolder: pkiRoot,
        name: "pki",
        automaticallyAcceptUnknownCertificate: !secure,
    });
    // The trust list is a folder the manager polls (every 5 s by default, and a file counts
    // once it was stable for 2 s): poll faster, so a certificate moved in is seen soon.
    certificateManager.folderPoolingInterval = 200;
    await certificateManager.initialize();
    const server = new OPCUAServer({
        port,
        host: "127.0.0.1",
        hostname: "127.0.0.1",
        resourcePath: "",
        serverCertificateManager: certificateManager,
        securityModes: secure ? [mode] : [MessageSecurityMode.None],
        securityPolicies: secure ? [SecurityPolicy.Basic256Sha256] : [SecurityPolicy.None],
        allowAnonymous: !users,
        userManager: users
            ? { isValidUser: (name, password) => users[name] !== undefined && users[name] === password }
            : undefined,
        serverInfo: { applicationUri: "urn:edge-gateway:tests:nodeopcua-server" },
        buildInfo: { productName: "edge-gateway node-opcua test server" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const vendor = addressSpace.registerNamespace(VENDOR_URI);
    const ours = addressSpace.registerNamespace(OUR_URI);
    const objects = addressSpace.rootFolder.objects;

    const decoy = vendor.addFolder(objects, { browseName: "Decoy", nodeId: "s=Press" });
    vendor.addVariable({
        componentOf: decoy,
        browseName: "GoodCount",
        nodeId: "s=Press.GoodCount",
        dataType: "UInt32",
        value: { dataType: DataType.UInt32, value: 999 },
    });

    const press = ours.addFolder(objects, { browseName: "Press", nodeId: "s=Press" });
    const spec = {
        GoodCount: ["UInt32", DataType.UInt32, Number(goodArg || 0)],
        AbstractCount: ["UInteger", DataType.UInt32, 0],
        Ratio: ["Double", DataType.Double, 0.5],
        AbstractRatio: ["Number", DataType.Double, 0.25],
        State: ["String", DataType.String, "running"],
    };
    const nodes = {};
    const values = {};
    for (const [name, [declared, type, initial]] of Object.entries(spec)) {
        nodes[name] = ours.addVariable({
            componentOf: press,
            browseName: name,
            nodeId: `s=Press.${name}`,
            dataType: declared,
            minimumSamplingInterval: 0,
        });
        values[name] = initial;
        nodes[name].setValueFromSource(new Variant({ dataType: type, value: initial }));
    }

    await server.start();
    const namespaces = addressSpace.getNamespaceArray().map((ns) => ns.namespaceUri);
    const answer = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
    answer({
        ready: true,
        endpoint: server.getEndpointUrl(),
        namespaces,
        trusted: path.join(certificateManager.rootDir, "trusted", "certs"),
        rejected: path.join(certificateManager.rootDir, "rejected"),
    });

    const lines = readline.createInterface({ input: process.stdin });
    lines.on("line", (line) => {
        const [op, name, raw] = line.trim().split(/\s+/);
        const entry = spec[name];
        if (!entry || (op !== "set" && op !== "add")) {
            answer({ error: `bad command ${JSON.stringify(line)}` });
            return;
        }
        const type = entry[1];
        let value;
        if (type === DataType.String) {
            value = raw;
        } else if (type === DataType.Double) {
            value = Number(raw);
        } else {
            const n = Number(raw);
            value = op === "add" ? (values[name] + n) % WRAP : n % WRAP;
        }
        values[name] = value;
        nodes[name].setValueFromSource(new Variant({ dataType: type, value }));
        answer({ ok: name, value });
    });
    lines.on("close", async () => {
        await server.shutdown(0);
        process.exit(0);
    });
    const stop = async () => {
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    process.stdout.write(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }) + "\n");
    process.exit(1);
});
