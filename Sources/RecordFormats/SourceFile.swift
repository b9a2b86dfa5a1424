import Foundation

/// Checks that a path the user gave is a file pipectl can read, before anything is read from
/// it or created for it (a topic, a fingerprint row).
///
/// Why: Foundation's `FileHandle(forReadingAtPath:)` opens a folder without complaint and its
/// `readData(ofLength:)` then stops the process with `Fatal error: 'try!' ... Is a directory`
/// and a backtrace. Every reader of a user's file calls `checkReadable` first.
public enum SourceFile {
    /// One-line reasons, each starting with the path: `data: is a folder, not a file`.
    public struct Unreadable: Error, Sendable, Equatable, CustomStringConvertible {
        public var path: String
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    /// Throws `Unreadable` unless `path` exists, is (or links to) a regular file and can be
    /// opened for reading.
    public static func checkReadable(_ path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            var link = stat()
            switch code {
            case ELOOP:
                throw Unreadable(path: path, reason: "is a symlink loop")
            case ENOENT where lstat(path, &link) == 0:
                throw Unreadable(path: path, reason: "is a symlink to a file that does not exist")
            case ENOENT:
                throw Unreadable(path: path, reason: "no such file")
            case ENOTDIR:
                throw Unreadable(path: path, reason: "no such file (a part of the path is not a folder)")
            case EACCES:
                throw Unreadable(path: path, reason: "permission denied")
            default:
                throw Unreadable(path: path, reason: String(cString: strerror(code)))
            }
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            break
        case S_IFDIR:
            throw Unreadable(path: path, reason: "is a folder, not a file")
        default:
            // A pipe or device would be consumed by the fingerprint and never read again.
            throw Unreadable(path: path, reason: "is not a regular file (a pipe, socket or device)")
        }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let code = errno
            throw Unreadable(path: path, reason: code == EACCES ? "permission denied" : String(cString: strerror(code)))
        }
        close(fd)
    }
}
