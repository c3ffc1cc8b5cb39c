import Foundation
import GRDB

/// The demo's "phone": the folder a messaging app would back up. A chat database in WAL mode
/// (chats, messages, media), photos and voice notes, and a settings file.
struct SamplePhone {
    let root: URL

    var database: URL { root.appendingPathComponent("Databases/msgstore.db") }
    var media: URL { root.appendingPathComponent("Media") }

    /// A message body the demo later searches for in the cloud storage folder (it must not be found).
    static let secretMessage = "meet me at the old lighthouse at 7, bring the blue notebook"

    private static let words = ("hello see you tomorrow ok thanks where are we meeting the photo is great call me "
        + "later dinner at eight happy birthday on my way running late sounds good what time").split(separator: " ")

    /// Creates the phone with `messages` messages and a few media files; deterministic per seed.
    static func make(at root: URL, messages: Int, seed: UInt64 = 7) throws -> SamplePhone {
        let phone = SamplePhone(root: root)
        let fm = FileManager.default
        for sub in ["Databases", "Media/Images", "Media/Voice Notes", "Settings"] {
            try fm.createDirectory(at: root.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        var rng = SplitMix64(seed: seed)
        let db = try DatabaseQueue(path: phone.database.path)
        try db.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA journal_mode=WAL")
        }
        try db.write { db in
            try db.execute(sql: """
                CREATE TABLE chats(id INTEGER PRIMARY KEY, jid TEXT NOT NULL, subject TEXT);
                CREATE TABLE messages(id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, from_me INTEGER NOT NULL,
                                      ts INTEGER NOT NULL, body TEXT, media_path TEXT);
                CREATE INDEX messages_chat_ts ON messages(chat_id, ts);
                """)
            for chat in 0..<40 {
                try db.execute(sql: "INSERT INTO chats VALUES (?, ?, ?)",
                               arguments: [chat, "+1555\(1_000_000 + chat)@s.example", chat % 7 == 0 ? "group \(chat)" : nil])
            }
            for i in 0..<messages {
                let body: String
                if i == messages / 2 {
                    body = secretMessage
                } else {
                    let count = 2 + Int(rng.next() % 20)
                    body = (0..<count).map { _ in String(words[Int(rng.next() % UInt64(words.count))]) }.joined(separator: " ")
                }
                try db.execute(sql: "INSERT INTO messages VALUES (?, ?, ?, ?, ?, NULL)",
                               arguments: [i, Int(rng.next() % 40), Int(rng.next() % 2), 1_700_000_000 + i * 37, body])
            }
        }
        try db.close()
        for k in 0..<6 {
            try randomBytes(count: 150_000 + Int(rng.next() % 400_000), rng: &rng)
                .write(to: root.appendingPathComponent("Media/Images/IMG-\(k).jpg"))
        }
        for k in 0..<3 {
            try randomBytes(count: 40_000 + Int(rng.next() % 60_000), rng: &rng)
                .write(to: root.appendingPathComponent("Media/Voice Notes/PTT-\(k).opus"))
        }
        try Data(#"{"theme":"dark","notifications":true,"backup":"daily"}"#.utf8)
            .write(to: root.appendingPathComponent("Settings/preferences.json"))
        return phone
    }

    /// Day two: new messages and one new photo.
    func addDay(messages: Int, seed: UInt64 = 11) throws {
        var rng = SplitMix64(seed: seed)
        let db = try DatabaseQueue(path: database.path)
        try db.write { db in
            let start = try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(id), 0) + 1 FROM messages") ?? 0
            for i in 0..<messages {
                try db.execute(sql: "INSERT INTO messages VALUES (?, ?, ?, ?, ?, NULL)",
                               arguments: [start + i, Int(rng.next() % 40), 1, 1_800_000_000 + i, "day two message \(i)"])
            }
            try db.execute(sql: "INSERT INTO messages VALUES (?, 3, 0, 1800009999, 'look at this', 'Media/Images/IMG-new.jpg')",
                           arguments: [start + messages])
        }
        try db.close()
        try Self.randomBytes(count: 300_000, rng: &rng).write(to: media.appendingPathComponent("Images/IMG-new.jpg"))
    }

    /// Every message as (id, chat, body) in id order.
    static func messages(in database: URL) throws -> [String] {
        var config = Configuration()
        config.readonly = true
        let db = try DatabaseQueue(path: database.path, configuration: config)
        defer { try? db.close() }
        return try db.read { db in
            try String.fetchAll(db, sql: "SELECT id || '|' || chat_id || '|' || COALESCE(body, '') FROM messages ORDER BY id")
        }
    }

    static func integrityCheck(_ database: URL) throws -> String {
        var config = Configuration()
        config.readonly = true
        let db = try DatabaseQueue(path: database.path, configuration: config)
        defer { try? db.close() }
        return try db.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") ?? "no answer" }
    }

    private static func randomBytes(count: Int, rng: inout SplitMix64) -> Data {
        var data = Data(count: count)
        data.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= count {
                raw.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < count { raw[i] = UInt8(truncatingIfNeeded: rng.next()); i += 1 }
        }
        return data
    }
}

/// A small deterministic generator so the sample phone is the same on every run (not for secrets).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
