/* version.h: the project's version, and the LLVM it was built with, as
 * the build defines them (CMakeLists.txt: project(... VERSION) and the
 * LLVM package found); --version prints them. */
#ifndef ILNAS_BASE_VERSION_H
#define ILNAS_BASE_VERSION_H

#ifndef ILNAS_VERSION
#define ILNAS_VERSION "unknown"
#endif
#ifndef ILNAS_LLVM_VERSION
#define ILNAS_LLVM_VERSION "unknown"
#endif

#endif
