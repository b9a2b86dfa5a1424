import Foundation

/// The folder a spec belongs to, and whether a path it names stays inside it.
///
/// A spec lives in `PROJECT/pipelines/NAME.yaml` and names files relative to itself
/// (`../schemas/x.yaml`, `../data/x.csv`), so the project is the spec's folder's parent. A spec
/// from an untrusted place must not make `validate` or `run` read `/etc/shadow` or a private key:
/// paths that leave the project (by `..`, an absolute path or a symlink) need the caller's
/// explicit `--allow-outside-project`.
public struct ProjectFolder: Sendable, Equatable {
    /// Absolute, symlinks resolved.
    public var path: String
    /// The folder as the user would write it (`.` for `pipelines/x.yaml`), for messages.
    public var shownAs: String

    /// The project of the spec at `specFile` (relative to the working directory or absolute).
    public init(containingSpec specFile: String) {
        let directory = (Self.absolute(specFile) as NSString).deletingLastPathComponent
        let parent = (directory as NSString).deletingLastPathComponent
        path = Self.real(parent.isEmpty ? "/" : parent)
        shownAs = SpecParser.join((specFile as NSString).deletingLastPathComponent, "..")
    }

    /// The project at `path` itself (relative to the working directory or absolute); `shownAs` is
    /// `path` as given.
    public init(path: String) {
        self.path = Self.real(Self.absolute(path))
        shownAs = path
    }

    /// Whether `file` (as the spec resolved it) is inside the project once `..` and symlinks are
    /// followed. A file that does not exist yet is judged by its text.
    public func contains(_ file: String) -> Bool {
        let resolved = Self.real(Self.absolute(file))
        return path == "/" || resolved == path || resolved.hasPrefix(path + "/")
    }

    static func absolute(_ path: String) -> String {
        let full = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return SpecParser.normalize(full)
    }

    /// `realpath(3)`, or the longest existing prefix resolved plus the rest when the file does
    /// not exist (so `link-to-etc/missing` still counts as outside).
    static func real(_ path: String) -> String {
        if let resolved = realpath(path, nil) {
            defer { free(resolved) }
            return String(cString: resolved)
        }
        let parent = (path as NSString).deletingLastPathComponent
        guard parent != path, !parent.isEmpty else { return path }
        return SpecParser.normalize(real(parent) + "/" + (path as NSString).lastPathComponent)
    }
}
